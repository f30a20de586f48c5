"""The figures of the e2e benchmark: a table on stdout and ``.tidings/bench/e2e.json``.

Each repeat keeps every phase of every pipeline; the table shows medians over the repeats, and the
ratios of Tidings to each loop are computed within a repeat (both measured minutes apart on the
same machine) before their median is taken.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from streams.settings import REPO_ROOT

JSON_PATH = REPO_ROOT / ".tidings" / "bench" / "e2e.json"
PIPELINES = (("tidings", "Tidings worker (Faust, EOS)"), ("transactional", "transactional loop (EOS)"),
             ("bare", "bare loop (no EOS)"))


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
        "load_average": os.getloadavg(),
    }


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return ""


def repeat_figures(*, bare: list[Any], transactional: list[Any], tidings: list[Any], ses: dict[str, Any],
                   scaled: list[Any] | None = None, workers: int = 1, capped: list[list[Any]] | None = None,
                   cores_per_worker: float = 0.0) -> dict[str, Any]:
    """One repeat: every phase of each pipeline (``test_e2e.Phase``), the SES figures, the
    scaled-out deployment's saturation with its ratio to one worker's, and (``capped``: the phases
    of one capped worker, then of ``workers`` capped workers) the same ratio at a CPU cap per worker."""
    def phases(run: list[Any]) -> dict[str, Any]:
        return {p.name: {"rate": p.rate, "cpu_ms_per_event": p.cpu_ms_per_event, "machine_cores_busy": p.machine_cores_busy,
                         "broker_cpu_ms_per_event": p.broker_cpu_ms_per_event, "broker_jit_ms_per_event": p.broker_jit_ms_per_event,
                         **dataclasses.asdict(p.figures)}
                for p in run}

    figures = {"bare": phases(bare), "transactional": phases(transactional), "tidings": phases(tidings), "ses": ses}
    t = figures["tidings"]["saturation"]
    for loop in ("bare", "transactional"):
        other = figures[loop]["saturation"]
        figures[f"ratio_to_{loop}"] = {
            "events_per_second": round(t["events_per_second"] / other["events_per_second"], 3),
            # >= 1 means Tidings spends more CPU per event; the target is stated as its inverse.
            "cpu_per_event": round(t["cpu_ms_per_event"] / other["cpu_ms_per_event"], 3),
        }
    if scaled:
        s = phases(scaled)["saturation"]
        figures["scaled"] = {"workers": workers, "events_per_second": s["events_per_second"],
                             "cpu_ms_per_event": s["cpu_ms_per_event"], "machine_cores_busy": s["machine_cores_busy"],
                             "one_worker_machine_cores_busy": t["machine_cores_busy"],
                             "broker_cpu_ms_per_event": s["broker_cpu_ms_per_event"],
                             "broker_jit_ms_per_event": s["broker_jit_ms_per_event"],
                             "ratio_to_one_worker": round(s["events_per_second"] / t["events_per_second"], 3)}
    if capped:
        one, many = (phases(run)["saturation"] for run in capped)

        def cores_each(p: dict[str, Any], n: int) -> float:
            return round(p["cpu_ms_per_event"] * p["events_per_second"] / 1000 / n, 3)

        figures["capped"] = {
            "workers": workers, "cores_per_worker": cores_per_worker,
            "one_worker_events_per_second": one["events_per_second"], "events_per_second": many["events_per_second"],
            "one_worker_cores_used": cores_each(one, 1), "cores_used_per_worker": cores_each(many, workers),
            "machine_cores_busy": many["machine_cores_busy"],
            "ratio_to_one_worker": round(many["events_per_second"] / one["events_per_second"], 3),
        }
    return figures


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def build(*, events: int, partitions: int, broker: str, repeats: list[dict[str, Any]], quota: float,
          paced_seconds: float) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    for pipeline, _ in PIPELINES:
        medians[pipeline] = {
            phase: {key: _median([r[pipeline][phase][key] for r in repeats])
                    for key in ("events_per_second", "cpu_ms_per_event", "p50_ms", "p99_ms", "rate",
                                "broker_cpu_ms_per_event", "broker_jit_ms_per_event")
                    if repeats[0][pipeline][phase].get(key) is not None}
            for phase in repeats[0][pipeline]
        }
    for loop in ("bare", "transactional"):
        medians[f"ratio_to_{loop}"] = {k: _median([r[f"ratio_to_{loop}"][k] for r in repeats])
                                       for k in ("events_per_second", "cpu_per_event")}
    medians["ses"] = {k: _median([r["ses"][k] for r in repeats])
                      for k in ("achieved_per_second", "achieved_to_quota", "peak_in_any_second")}
    for run in ("scaled", "capped"):  # settings taken from the first repeat, figures as medians
        if all(run in r for r in repeats):
            medians[run] = {k: repeats[0][run][k] if k in ("workers", "cores_per_worker") else _median([r[run][k] for r in repeats])
                            for k in repeats[0][run] if repeats[0][run][k] is not None}
    return {
        "benchmark": "e2e",
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "events": events,
        "paced_seconds": paced_seconds,
        "quota": quota,
        "partitions": partitions,
        "broker": broker,
        "machine": machine(),
        "medians": medians,
        "repeats": repeats,
    }


def table(report: dict[str, Any]) -> str:
    m, med = report["machine"], report["medians"]
    lines = [
        "",
        f"e2e benchmark at {report['commit']}: {report['events']} BookingCreated at saturation, paced runs of "
        f"{report['paced_seconds']:.0f} s, {report['partitions']} partitions, nproc={m['nproc']} ({m['cpu']}), "
        f"load {m['load_average'][0]:.1f}; medians of {len(report['repeats'])} repeats",
        f"{'':<30}{'events/s':>10}{'CPU ms/ev':>10}{'150/s p50':>11}{'p99 ms':>8}{'80% rate':>10}{'p50':>8}{'p99 ms':>8}",
    ]
    for key, name in PIPELINES:
        f = med[key]
        sat, slow, fast = f["saturation"], f["paced 150/s"], f["paced 80%"]
        lines.append(f"{name:<30}{sat['events_per_second']:>10.1f}{sat['cpu_ms_per_event']:>10.2f}"
                     f"{slow['p50_ms']:>11.0f}{slow['p99_ms']:>8.0f}{fast['rate']:>10.0f}{fast['p50_ms']:>8.0f}{fast['p99_ms']:>8.0f}")
    for loop in ("transactional", "bare"):
        r = med[f"ratio_to_{loop}"]
        lines.append(f"Tidings / {loop} loop: events/s x{r['events_per_second']:.3f}, "
                     f"{loop} loop's CPU per event / Tidings' {1 / r['cpu_per_event']:.3f}")
    if "scaled" in med:
        sc = med["scaled"]
        lines.append(f"Tidings, {sc['workers']} workers in one group: {sc['events_per_second']:.1f} events/s "
                     f"(x{sc['ratio_to_one_worker']:.3f} of one worker), CPU {sc['cpu_ms_per_event']:.2f} ms/event summed; "
                     f"the machine busy {sc['machine_cores_busy']:.2f} of {m['nproc']} cores (one worker's run: "
                     f"{sc['one_worker_machine_cores_busy']:.2f})")
    if "capped" in med:
        c = med["capped"]
        lines.append(f"Tidings capped at {c['cores_per_worker']} cores a worker: 1 worker {c['one_worker_events_per_second']:.1f} "
                     f"events/s on {c['one_worker_cores_used']:.2f} cores, {c['workers']} workers "
                     f"{c['events_per_second']:.1f} events/s on {c['cores_used_per_worker']:.2f} cores each "
                     f"(x{c['ratio_to_one_worker']:.3f} of one worker); the machine busy {c['machine_cores_busy']:.2f} "
                     f"of {m['nproc']} cores")
    broker = _broker_line(med)
    if broker:
        lines.append(broker)
    ses = med["ses"]
    lines += [
        f"outbound -> SES stand-in at a quota of {report['quota']:.0f}/s: {ses['achieved_per_second']:.1f}/s "
        f"(x{ses['achieved_to_quota']:.3f} of the quota), peak {ses['peak_in_any_second']:.0f} in any second",
        "events/s: N / (first publish -> last outbound record visible to a read_committed consumer)",
        "CPU: user + system time of the pipeline's process over that window, per event (Tidings sends at 14 mails/s meanwhile)",
        "p50/p99: inbound record timestamp -> outbound record visible",
        f"figures also in {JSON_PATH.relative_to(REPO_ROOT)}",
        "",
    ]
    return "\n".join(lines)


def _broker_line(med: dict[str, Any]) -> str | None:
    """The local broker's CPU per event at saturation in each run, with its JIT compiler's part."""
    runs = [(name.split(" (")[0], med[key]["saturation"]) for key, name in reversed(PIPELINES)]
    if "scaled" in med:
        runs.append((f"{med['scaled']['workers']} workers", med["scaled"]))
    shown = [f"{name} {f['broker_cpu_ms_per_event']:.3f} ({f['broker_jit_ms_per_event']:.3f})"
             for name, f in runs if "broker_cpu_ms_per_event" in f]
    return "broker CPU ms per event at saturation (of it its JIT compiler): " + ", ".join(shown) if shown else None


def write(report: dict[str, Any], path: Path = JSON_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
