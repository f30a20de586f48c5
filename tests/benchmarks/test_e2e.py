"""Tidings end to end against a bare confluent-kafka loop doing the same work, on the real broker.

What is measured, per pipeline, for the same N pre-encoded BookingCreated events (same bytes, same
partition count, fresh topics):

- throughput: N / (time the last outbound record became visible to a ``read_committed``
  consumer - time of the first publish), in events per second;
- latency p50/p99: inbound record timestamp to outbound record visible (and to the outbound
  record's own timestamp), see ``reader.py``.

The pipelines run one after the other, never together: first a broker warm-up (the N events
through a scratch topic), then the baseline (``baseline.py``, its own process), then a Tidings
worker (``python -m streams worker`` through ``deploy.local.worker``, exactly-once, sending to
the SES emulator while it ingests, as in production). Each first gets one warm-up event and the
clock starts only once its outbound record is out, so start-up and the consumer group join are
not timed. Finally the benchmark waits until the worker has sent every mail to SES and reports
how long that took from the first publish.

Figures are printed and written to ``.tidings/bench/e2e.json``. Only sanity is asserted (every
event came out exactly once, the counts match), never speed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.local.samples import BOOKING_CREATED
from deploy.local.worker import WorkerProcess
from streams.codecs.avro import SingleObjectCodec
from streams.producer import EventPublisher
from streams.settings import REPO_ROOT, Settings
from streams.topics import TopicNames, ensure_topics
from tests.benchmarks import report
from tests.benchmarks.baseline import BaselineProcess
from tests.benchmarks.delivery import emails_sent, mails_in_emulator
from tests.benchmarks.reader import Figures, OutboundReader, figures
from tests.benchmarks.workload import BenchParams, Workload, build_workload
from tests.integration.harness import TEST_UNSUBSCRIBE_SECRET, Deployment

EVENTS = int(os.environ.get("TIDINGS_BENCH_EVENTS", "2000") or 2000)
STARTUP_SECONDS = 120.0  # a process starts, joins its group and processes the warm-up event
PROCESS_SECONDS = 60.0 + EVENTS / 10  # N events through a pipeline, at 10 events/s at worst
SES_SECONDS = 60.0 + EVENTS / 5  # every mail accepted by the SES emulator, at 5 mails/s at worst
TOTAL_SECONDS = 300 + 2 * STARTUP_SECONDS + 3 * PROCESS_SECONDS + SES_SECONDS + 120


def prefixed(run: str, name: str, bootstrap: str, params: BenchParams) -> Settings:
    """Settings naming a fresh set of topics (``<prefix>bookings``, ``<prefix>outbound`` ...)."""
    return Settings(app_id=f"bench-{run}-{name}", topic_prefix=f"bench-{run}-{name}.",
                    kafka_bootstrap=bootstrap, partitions=params.partitions)


def bookings_topic(topics: TopicNames) -> str:
    """The inbound topic carrying BookingCreated."""
    return topics.for_event(BOOKING_CREATED)


def timed_run(
    publisher: EventPublisher, topic: str, reader: OutboundReader, workload: Workload, codec: SingleObjectCodec,
    check: Callable[[], Any], what: str,
) -> tuple[Figures, float]:
    """Warm-up event first (untimed), then the N events; figures and the time of the first publish."""
    publisher.publish_raw(topic, workload.warmup.value, key=workload.warmup.key)
    publisher.flush()
    reader.wait_for(workload.warmup_records, timeout=STARTUP_SECONDS, check=check, what=f"{what}: warm-up event")
    skip = len(reader.arrivals)
    assert skip == workload.warmup_records, f"{what}: {skip} records for the warm-up event"

    started_at = time.time()
    for event in workload.events:
        publisher.publish_raw(topic, event.value, key=event.key)
    publisher.flush()
    reader.wait_for(skip + workload.records, timeout=PROCESS_SECONDS, check=check, what=what)
    result, records = figures(reader.arrivals[skip:], codec, started_at=started_at, events=len(workload.events))
    print(f"  {what}: {result}", flush=True)
    assert_exactly_once(records, workload, what)
    return result, started_at


def assert_exactly_once(records: list[dict[str, Any]], workload: Workload, what: str) -> None:
    assert len(records) == workload.records, f"{what}: {len(records)} outbound records, expected {workload.records}"
    assert len({r["message_id"] for r in records}) == len(records), f"{what}: duplicate message ids"
    assert {r["source_event_id"] for r in records} == workload.event_ids, f"{what}: events missing from the output"


def warm_broker(bootstrap: str, publisher: EventPublisher, workload: Workload, run: str, params: BenchParams) -> None:
    """Push the N events through a scratch topic once, so neither pipeline meets a cold broker."""
    settings = prefixed(run, "warmup", bootstrap, params)
    ensure_topics(settings)
    topic = bookings_topic(TopicNames.from_settings(settings))
    reader = OutboundReader(bootstrap, topic, f"bench-{run}-warmup-reader")
    try:
        for event in workload.events:
            publisher.publish_raw(topic, event.value, key=event.key)
        publisher.flush()
        reader.wait_for(len(workload.events), timeout=PROCESS_SECONDS, check=lambda: None, what="broker warm-up")
    finally:
        reader.close()


def bench_baseline(bootstrap: str, publisher: EventPublisher, workload: Workload, run: str, params: BenchParams,
                   workdir: Path) -> Figures:
    settings = prefixed(run, "baseline", bootstrap, params)
    ensure_topics(settings)
    topics = TopicNames.from_settings(settings)
    process = BaselineProcess(bootstrap, bookings_topic(topics), topics.outbound, settings.app_id, workdir / "baseline.log")
    reader = OutboundReader(bootstrap, topics.outbound, f"bench-{run}-baseline-reader")
    try:
        process.start()
        result, _ = timed_run(publisher, bookings_topic(topics), reader, workload, publisher.codec, process.assert_alive,
                              "baseline")
        process.stop()
        total = workload.warmup_records + workload.records
        assert len(reader.arrivals) == total, f"baseline: {len(reader.arrivals)} records in all, expected {total}"
        return result
    finally:
        reader.close()
        process.stop()


def bench_tidings(bootstrap: str, ses_endpoint: str, publisher: EventPublisher, workload: Workload, run: str,
                  params: BenchParams, workdir: Path) -> tuple[Figures, dict[str, Any]]:
    settings = prefixed(run, "tidings", bootstrap, params)
    deployment = Deployment(
        run=run, bootstrap=bootstrap, ses_endpoint=ses_endpoint, workdir=workdir,
        env={
            "TIDINGS_APP_ID": settings.app_id,
            "TIDINGS_TOPIC_PREFIX": settings.topic_prefix,
            "TIDINGS_KAFKA_BOOTSTRAP": bootstrap,
            "TIDINGS_SES_ENDPOINT_URL": ses_endpoint,
            "TIDINGS_AWS_ACCESS_KEY_ID": "test",
            "TIDINGS_AWS_SECRET_ACCESS_KEY": "test",
            "TIDINGS_PARTITIONS": str(params.partitions),
            "TIDINGS_UNSUBSCRIBE_SECRET": TEST_UNSUBSCRIBE_SECRET,
        },
    )
    deployment.create_topics()
    deployment.publish_tenants()
    topics = deployment.topics
    reader = OutboundReader(bootstrap, topics.outbound, f"bench-{run}-tidings-reader")
    try:
        worker = deployment.start_worker()
        result, started_at = timed_run(publisher, bookings_topic(topics), reader, workload, publisher.codec,
                                       worker.assert_alive, "Tidings")
        ses = ses_progress(worker, ses_endpoint, workload, run, first_publish=started_at)
        total = workload.warmup_records + workload.records
        assert len(reader.arrivals) == total, f"Tidings: {len(reader.arrivals)} outbound records in all, expected {total}"
        return result, ses
    finally:
        reader.close()
        deployment.close()


def ses_progress(worker: WorkerProcess, endpoint: str, workload: Workload, run: str, first_publish: float) -> dict[str, Any]:
    """Wait (with a deadline, but without failing) until the worker sent every mail; say how long it took."""
    expected = workload.warmup_records + workload.records
    deadline = time.monotonic() + SES_SECONDS
    sent = emails_sent(worker.metrics_url)
    while sent < expected and time.monotonic() < deadline:
        worker.assert_alive()
        time.sleep(1.0)
        sent = emails_sent(worker.metrics_url)
    done = sent >= expected
    return {
        "expected": expected,
        "sent": sent,
        "seconds_to_all": round(time.time() - first_publish, 1) if done else None,
        "in_emulator": mails_in_emulator(endpoint, f".{run}@"),
        "deadline_seconds": SES_SECONDS,
    }


@pytest.mark.timeout(TOTAL_SECONDS)
def test_tidings_against_bare_loop(
    kafka_bootstrap: str, ses_endpoint: str, bench_params: BenchParams, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    publisher = EventPublisher(kafka_bootstrap, REPO_ROOT / "schemas")
    workload = build_workload(bench_params.events, run, publisher)
    print(f"\nbenchmark run {run}: {len(workload.events)} events -> {workload.records} mails, "
          f"{bench_params.partitions} partitions, broker {kafka_bootstrap}", flush=True)

    warm_broker(kafka_bootstrap, publisher, workload, run, bench_params)
    baseline = bench_baseline(kafka_bootstrap, publisher, workload, run, bench_params, tmp_path)
    tidings, ses = bench_tidings(kafka_bootstrap, ses_endpoint, publisher, workload, run, bench_params, tmp_path / "tidings")
    del publisher  # before the session's broker stops

    figures_ = report.build(events=len(workload.events), partitions=bench_params.partitions, broker=bench_params.broker,
                            tidings=tidings, baseline=baseline, ses=ses)
    report.write(figures_)
    print(report.table(figures_), flush=True)
    assert ses["sent"] == ses["expected"], f"the worker sent {ses['sent']}/{ses['expected']} mails within {SES_SECONDS:.0f}s"
    assert ses["in_emulator"] == ses["expected"], f"{ses['in_emulator']}/{ses['expected']} mails in the SES emulator"
