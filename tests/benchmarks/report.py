"""The figures of one benchmark run: a table on stdout and ``.tidings/bench/e2e.json``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from streams.settings import REPO_ROOT
from tests.benchmarks.reader import Figures

JSON_PATH = REPO_ROOT / ".tidings" / "bench" / "e2e.json"


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model or platform.processor(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def build(*, events: int, partitions: int, broker: str, tidings: Figures, baseline: Figures,
          ses: dict[str, Any]) -> dict[str, Any]:
    return {
        "benchmark": "e2e",
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "events": events,
        "partitions": partitions,
        "broker": broker,
        "machine": machine(),
        "tidings": dataclasses.asdict(tidings),
        "baseline": dataclasses.asdict(baseline),
        "ratio_tidings_to_baseline": round(tidings.events_per_second / baseline.events_per_second, 3),
        "ses": ses,
    }


def table(report: dict[str, Any]) -> str:
    t, b, m, ses = report["tidings"], report["baseline"], report["machine"], report["ses"]
    head = f"{'':<28}{'events/s':>10}{'seconds':>9}{'p50 ms':>9}{'p99 ms':>9}{'p50 ms*':>9}{'p99 ms*':>9}"

    def row(name: str, f: dict[str, Any]) -> str:
        return (f"{name:<28}{f['events_per_second']:>10.1f}{f['seconds']:>9.2f}{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}"
                f"{f['stamped_p50_ms']:>9.1f}{f['stamped_p99_ms']:>9.1f}")

    if ses.get("seconds_to_all") is not None:
        ses_line = f"all {ses['sent']} in SES {ses['seconds_to_all']:.1f} s after the first publish"
    else:
        ses_line = f"only {ses['sent']}/{ses['expected']} sent before the deadline"
    return "\n".join([
        "",
        f"Tidings end-to-end benchmark: N={report['events']} BookingCreated events, {report['partitions']} partitions, "
        f"nproc={m['nproc']} ({m['cpu']}), broker {report['broker']}",
        head,
        row("Tidings worker (Faust, EOS)", t),
        row("baseline (bare loop)", b),
        f"{'ratio Tidings/baseline':<28}{report['ratio_tidings_to_baseline']:>10.3f}",
        f"SES: {ses_line}; {ses['in_emulator']} of them found in the emulator",
        "seconds: first publish to last outbound record visible to a read_committed consumer",
        "p50/p99: inbound record timestamp to outbound record visible; *: to the outbound record's own timestamp",
        f"figures also in {JSON_PATH.relative_to(REPO_ROOT)}",
        "",
    ])


def write(report: dict[str, Any], path: Path = JSON_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
