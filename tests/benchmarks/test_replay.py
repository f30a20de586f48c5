"""Replay speed: a dry run of BookingCreated events on one core, against what limits it.

``TIDINGS_BENCH_REPLAY_EVENTS`` (default 100,000) ``BookingCreated`` events of one tenant, each a
booking of its own with its own recipient, written to a record file first (not timed), then:

- the headline: one dry run of all of them, as ``tidings-replay --file F --offline`` runs it
  (file read, the worker's ingest handler under its guard, entity state and timers, the sender's
  ledger and suppression decisions, one JSON line per mail), events per second and peak RSS;
- medians of ``REPEATS`` runs over a slice of ``SLICE`` events, same process, for three cases:
  ``replay`` (the above), ``pipeline`` (the ingest pipeline alone: decode, rules, render, encode,
  the floor the replay's own machinery stands on) and ``no_render`` (decode and rules only: what
  the records would cost if mails were not rendered).

Single core, no broker, no SES. Printed, and written to ``.tidings/bench/replay.json``; nothing
about speed is asserted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools
import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.domain.evaluate import event_firings
from streams.domain.samples import sample_event
from streams.domain.tenants import TenantDirectory
from streams.replay.records import ReplayRecord, dump_record, read_file
from streams.replay.report import DeliveryDecisions, JsonLines, Summary, fan_out
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


def _write_events(path: Path, n: int, rt: Any, now: dt.datetime) -> None:
    from streams.codecs.partitioning import default_partition

    catalog, topic = rt.topics.catalog, rt.topics.for_event(EVENT)
    template = sample_event(catalog.samples, EVENT, TENANT, now=now)
    with path.open("w") as f:
        for i in range(n):
            event = {**template, "envelope": {**template["envelope"], "event_id": f"ev-{i}"}, "booking_id": f"BK-{i}",
                     "customer": {**template["customer"], "id": f"CU-{i}", "email": f"c{i}@example.org"}}
            key = f"BK-{i}".encode()
            f.write(dump_record(ReplayRecord(topic, default_partition(key, rt.settings.partitions), i, key,
                                             rt.codec.encode(EVENT, event), now.timestamp())) + "\n")


def _dry_run(records: list[ReplayRecord] | Path, now: dt.datetime) -> tuple[float, int, int]:
    """Seconds, mails fired, entities in state for one dry run from a fresh replay."""
    from streams.replay.run import Replay

    rt, clock = _runtime(now)
    summary, lines = Summary(), JsonLines(io.StringIO())
    sink = io.StringIO()
    lines.out = sink
    replay = Replay(rt, clock, DeliveryDecisions(rt.suppressions), lambda line: fan_out((summary, lines), line))
    source = read_file(records) if isinstance(records, Path) else iter(records)

    def drop_output() -> None:  # the JSON lines are written, then dropped: memory stays the state's
        if sink.tell() > 1 << 20:
            sink.seek(0)
            sink.truncate()

    started = time.perf_counter()
    asyncio.run(replay.feed_all(source, on_record=drop_output))
    return time.perf_counter() - started, summary.count("fired"), replay.tables.entities()


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def test_replay_dry_run_throughput(tmp_path: Path) -> None:
    n = int(os.environ.get("TIDINGS_BENCH_REPLAY_EVENTS", "100000"))
    now = dt.datetime.now(dt.timezone.utc)
    rt, _ = _runtime(now)
    path = tmp_path / "bookings.jsonl"
    _write_events(path, n, rt, now)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    seconds, fired, entities = _dry_run(path, now)
    assert fired == n and entities == n
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    part = list(itertools.islice(read_file(path), SLICE))
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
    cases = {
        "replay": [_dry_run(part, now)[0] for _ in range(REPEATS)],
        "pipeline": [_timed(pipeline) for _ in range(REPEATS)],
        "no_render": [_timed(no_render) for _ in range(REPEATS)],
    }
    rates = {name: SLICE / statistics.median(times) for name, times in cases.items()}
    report = {
        "events": n,
        "headline_events_per_second": round(n / seconds, 1),
        "headline_seconds": round(seconds, 1),
        "entities_in_state": entities,
        "peak_rss_mib_before_and_after": [round(rss_before / 1024), round(rss_after / 1024)],
        f"median_of_{REPEATS}_events_per_second_over_{SLICE}": {k: round(v, 1) for k, v in rates.items()},
        "replay_share_of_pipeline_rate": round(rates["replay"] / rates["pipeline"], 3),
        "machine": machine(),
    }
    out = REPO_ROOT / ".tidings" / "bench" / "replay.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nReplay benchmark: dry run of {n:,} {EVENT} ({TENANT}), one core")
    print(f"  headline           {n / seconds:9.1f} events/s  ({seconds:.1f} s; {entities:,} entities; "
          f"peak RSS {rss_before // 1024} -> {rss_after // 1024} MiB)")
    for name, rate in rates.items():
        print(f"  {name:<18} {rate:9.1f} events/s  (median of {REPEATS} over {SLICE:,})")
    print(f"  replay / pipeline: {report['replay_share_of_pipeline_rate']}")
    print(f"  figures also in {out.relative_to(REPO_ROOT)}")
