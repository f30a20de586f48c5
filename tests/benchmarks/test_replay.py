"""Replay speed: a dry run of BookingCreated events, in one process and in several, against what limits it.

``TIDINGS_BENCH_REPLAY_EVENTS`` (default 100,000) ``BookingCreated`` events of one tenant, each a
booking of its own with its own recipient, spread over the partitions by their keys as a producer
would, are written to a record file first (not timed); then:

- the headlines: ``tidings-replay --file F --offline`` run as a user runs it (``cli.main``: start,
  file read, the worker's ingest handler under its guard, entity state and timers, the sender's
  ledger and suppression decisions, one JSON line per mail written to a file) with
  ``--processes 1`` and with ``--processes`` the usable CPUs; events per second and peak RSS
  (of this process, and the largest child);
- medians of ``REPEATS`` rounds over a slice of ``SLICE`` events, the cases interleaved in every
  round so that load from elsewhere on the machine falls on all of them alike: ``replay_1p`` and
  ``replay_np`` (the command as above on the slice), ``pipeline`` (the ingest pipeline alone:
  decode, rules, render, encode: the floor one process stands on) and ``no_render`` (decode and
  rules only), each by wall time and by CPU time. Ratios within the run: ``replay_1p / pipeline``
  per CPU second (what the replay adds to the worker's own work) and ``replay_np / replay_1p`` by
  wall time (what the processes give, given the CPU the machine had to spare).

No broker, no SES. Printed, and written to ``.tidings/bench/replay.json``; nothing about speed is
asserted (the machine is shared), only that every event became its mail.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.domain.evaluate import event_firings
from streams.domain.samples import sample_event
from streams.domain.tenants import TenantDirectory
from streams.replay.parallel import usable_cpus
from streams.replay.records import ReplayRecord, dump_record, read_file
from streams.settings import REPO_ROOT, Settings
from tests.benchmarks.report import machine

EVENT = "tidings.storage.BookingCreated"
TENANT = "lagerhaus-nord"
SLICE = 5_000
REPEATS = 3


def _runtime(now: dt.datetime) -> tuple[Any, Any]:
    from streams.app import build_runtime
    from streams.replay.run import Unreachable, VirtualClock

    clock = VirtualClock(now)
    rt = build_runtime(Settings(), sender=Unreachable(), attachments=Unreachable(), clock=clock)  # type: ignore[arg-type]
    for tenant in TenantDirectory.load(REPO_ROOT / "deploy" / "tenants"):
        rt.tenants.put(tenant)
    return rt, clock


def write_events(path: Path, n: int, rt: Any, now: dt.datetime, bookings: int | None = None) -> None:
    """``n`` BookingCreated records, each its own event; with ``bookings``, they fall on that many
    bookings (and customers) in turn, so the state stays that size however many records there are."""
    from streams.codecs.partitioning import default_partition

    catalog, topic = rt.topics.catalog, rt.topics.for_event(EVENT)
    template = sample_event(catalog.samples, EVENT, TENANT, now=now)
    offsets = dict.fromkeys(range(rt.settings.partitions), 0)
    with path.open("w") as f:
        for i in range(n):
            b = i if bookings is None else i % bookings
            event = {**template, "envelope": {**template["envelope"], "event_id": f"ev-{i}"}, "booking_id": f"BK-{b}",
                     "customer": {**template["customer"], "id": f"CU-{b}", "email": f"c{b}@example.org"}}
            key = f"BK-{b}".encode()
            partition = default_partition(key, rt.settings.partitions)
            offsets[partition] += 1
            f.write(dump_record(ReplayRecord(topic, partition, offsets[partition], key,
                                             rt.codec.encode(EVENT, event), now.timestamp())) + "\n")


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process and of the replay's processes


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # children that were waited for: the replay's, once joined
    return usage.ru_utime + usage.ru_stime


def _command(path: Path, out: Path, now: dt.datetime, processes: int) -> Run:
    """``tidings-replay --file path --offline`` with ``processes`` processes, wall and CPU time.

    On a machine shared with other benchmarks the wall time says how much CPU the replay was
    given; its CPU time says what it needed (events per CPU second is the "one core" figure).
    """
    from streams.replay.cli import main

    started, cpu, children = time.perf_counter(), time.process_time(), _cpu_children()
    code = main(["--file", str(path), "--tenants", str(REPO_ROOT / "deploy" / "tenants"), "--offline",
                 "--now", now.isoformat(), "--out", str(out), "--processes", str(processes)])
    run = Run(time.perf_counter() - started, time.process_time() - cpu + _cpu_children() - children)
    assert code == 0
    return run


def _fired(out: Path) -> int:
    with out.open("rb") as f:
        return sum(1 for line in f if b'"why":"fired"' in line)


def _timed(fn: Callable[[], object]) -> Run:
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    return Run(time.perf_counter() - started, time.process_time() - cpu)


def _peak_mib(who: int) -> int:
    return round(resource.getrusage(who).ru_maxrss / 1024)


@pytest.mark.timeout(3600)  # two runs of 100,000 events and the slices: minutes on a shared machine
def test_replay_dry_run_throughput(tmp_path: Path) -> None:
    n = int(os.environ.get("TIDINGS_BENCH_REPLAY_EVENTS", "100000"))
    processes = usable_cpus()
    now = dt.datetime.now(dt.timezone.utc)
    rt, _ = _runtime(now)
    path, part_path, out = tmp_path / "bookings.jsonl", tmp_path / "slice.jsonl", tmp_path / "out.jsonl"
    write_events(path, n, rt, now)
    with path.open() as src, part_path.open("w") as dst:
        dst.writelines(itertools.islice(src, SLICE))

    rss_before = _peak_mib(resource.RUSAGE_SELF)
    headline_1p = _command(path, out, now, 1)
    assert _fired(out) == n
    rss_1p = _peak_mib(resource.RUSAGE_SELF)
    headline_np = _command(path, out, now, processes)
    assert _fired(out) == n
    rss_child = _peak_mib(resource.RUSAGE_CHILDREN)

    part = list(read_file(part_path))
    tenant = rt.tenants.get(TENANT)

    def pipeline() -> None:
        for r in part:
            result = rt.pipeline.process(r.value, topic=r.topic, timestamp=now, now=now)
            for mail in result.mails:
                rt.pipeline.encode(mail.record)

    def no_render() -> None:
        for r in part:
            event_firings(EVENT, rt.codec.decode(r.value).record, rt.topics.catalog, tenant)

    pipeline()  # warm: templates compiled, locales loaded
    cases: dict[str, Callable[[], Run]] = {
        "replay_1p": lambda: _command(part_path, out, now, 1),
        "replay_np": lambda: _command(part_path, out, now, processes),
        "pipeline": lambda: _timed(pipeline),
        "no_render": lambda: _timed(no_render),
    }
    runs: dict[str, list[Run]] = {name: [] for name in cases}
    for _ in range(REPEATS):
        for name, case in cases.items():
            runs[name].append(case())
    rates = {name: SLICE / statistics.median(r.wall for r in rs) for name, rs in runs.items()}
    cpu_rates = {name: SLICE / statistics.median(r.cpu for r in rs) for name, rs in runs.items()}
    report: dict[str, Any] = {
        "events": n,
        "processes": processes,
        "headline_events_per_second": {"1_process": round(n / headline_1p.wall, 1),
                                       f"{processes}_processes": round(n / headline_np.wall, 1)},
        "headline_seconds": {"1_process": round(headline_1p.wall, 1), f"{processes}_processes": round(headline_np.wall, 1)},
        "headline_events_per_cpu_second": {"1_process": round(n / headline_1p.cpu, 1),
                                           f"{processes}_processes": round(n / headline_np.cpu, 1)},
        "peak_rss_mib": {"before": rss_before, "after_1_process": rss_1p, "largest_child": rss_child},
        f"median_of_{REPEATS}_events_per_second_over_{SLICE}": {k: round(v, 1) for k, v in rates.items()},
        f"median_of_{REPEATS}_events_per_cpu_second_over_{SLICE}": {k: round(v, 1) for k, v in cpu_rates.items()},
        "replay_1p_share_of_pipeline_rate_per_cpu_second": round(cpu_rates["replay_1p"] / cpu_rates["pipeline"], 3),
        "replay_np_over_replay_1p": round(rates["replay_np"] / rates["replay_1p"], 3),
        "load_average": os.getloadavg(),
        "machine": machine(),
    }
    target = REPO_ROOT / ".tidings" / "bench" / "replay.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2))
    print(f"\nReplay benchmark: dry run of {n:,} {EVENT} ({TENANT}), tidings-replay --file --offline")
    print(f"  headline, 1 process     {n / headline_1p.wall:9.1f} events/s  ({headline_1p.wall:.1f} s; "
          f"{n / headline_1p.cpu:.1f} events per CPU second; peak RSS {rss_before} -> {rss_1p} MiB)")
    print(f"  headline, {processes} processes   {n / headline_np.wall:9.1f} events/s  ({headline_np.wall:.1f} s; "
          f"{n / headline_np.cpu:.1f} events per CPU second; largest child {rss_child} MiB)")
    for name, rate in rates.items():
        print(f"  {name:<22} {rate:9.1f} events/s, {cpu_rates[name]:9.1f} per CPU second  "
              f"(medians of {REPEATS} over {SLICE:,}, interleaved)")
    print(f"  replay_1p / pipeline (per CPU second): {report['replay_1p_share_of_pipeline_rate_per_cpu_second']}; "
          f"replay_np / replay_1p: {report['replay_np_over_replay_1p']}; load average {os.getloadavg()[0]:.1f}")
    print(f"  figures also in {target.relative_to(REPO_ROOT)}")
