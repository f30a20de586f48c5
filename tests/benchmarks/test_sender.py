"""The sender against the SES emulator: throughput at the quota, priority under a backlog, faults.

Part 1, for each maximum send rate in ``TIDINGS_BENCH_SENDER_RATES`` (default 50, 200, 1000/s):
``rate x TIDINGS_BENCH_SENDER_SECONDS`` (default 10) mails are written straight to the outbound
topic while no worker runs (a full backlog; rendering has its own benchmark), then one worker
drains it through the fault proxy in pass-through mode, which stamps every send SES accepted.
Achieved rate: accepted sends over the time from the first to the last; peak: the most accepted
in any one-second window (the quota is per second). While the backlog drains, a password reset is
queued on the priority topic every 0.25 s; its queue time runs from being queued to its SENT
status. The emulator's own ceiling (direct boto3 calls from 16 threads, no Tidings) is measured in
the same run, because a rate above it cannot be reached by any sender.

Part 2, the issue's fault scenarios at full size (the integration tests run them smaller):
SIGKILL in the middle of 2,000 mails, SES throttling 30 % of requests for a minute, SES
unavailable for 60 s. Each prints sent / duplicates / lost.

Figures are printed and written to ``.tidings/bench/sender.json``. Asserted: nothing lost, nothing
doubled where nothing may be, never above the quota; the 0.98 target is compared in the printout.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from deploy.local.fault_proxy import FaultProxy
from deploy.local.ses_emulator import ses_client
from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.rendering.render import Renderer, Source
from streams.settings import REPO_ROOT
from streams.tenants import cli as tenants_cli
from streams.tenants.model import TenantDirectory
from streams.topics import ensure_topics
from streams.triggers.evaluate import event_firings
from streams.triggers.rules import Catalog
from streams.triggers.samples import sample_event
from tests.benchmarks.reader import percentile
from tests.integration.harness import Deployment, worker_env
from tests.integration.mailload import publish_bookings, tally, wait_arrived

RATES = [int(r) for r in os.environ.get("TIDINGS_BENCH_SENDER_RATES", "50,200,1000").split(",") if r.strip()]
SECONDS = float(os.environ.get("TIDINGS_BENCH_SENDER_SECONDS", "10"))
FAULTS = os.environ.get("TIDINGS_BENCH_SENDER_FAULTS", "1") != "0"  # 0: throughput only
CONCURRENCY = int(os.environ.get("TIDINGS_BENCH_SENDER_CONCURRENCY", "16"))  # the worker default
PRIORITY_EVERY_SECONDS = 0.25
TENANT = "lagerhaus-nord"
JSON_PATH = REPO_ROOT / ".tidings" / "bench" / "sender.json"
SCHEMA = "tidings.outbound.RenderedEmail"


class MailFactory:
    """Rendered mails of two real triggers, copied with fresh ids and recipients."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.codec = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))
        catalog, renderer = Catalog.load(), Renderer(REPO_ROOT / "templates")
        tenant = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants").get(TENANT)
        assert tenant is not None
        now = dt.datetime.now(dt.timezone.utc)

        def render(event_type: str) -> dict[str, Any]:
            event = sample_event(catalog.samples, event_type, TENANT, now=now)
            firing = next(iter(event_firings(event_type, event, catalog, tenant)))
            return renderer.render(firing, tenant, event, Source("bench", "bench", now), now).record

        self.normal = render("tidings.storage.BookingCreated")
        self.high = render("tidings.storage.PasswordResetRequested")

    def encode(self, n: int, *, high: bool = False) -> tuple[str, bytes]:
        base = self.high if high else self.normal
        tag = "pw" if high else "s"
        mail = {
            **base,
            "message_id": f"bench-{self.run}-{tag}{n}",
            "to_address": f"{tag}{n}.{self.run}@example.org",
            "created_at": dt.datetime.now(dt.timezone.utc),
        }
        return mail["message_id"], self.codec.encode(SCHEMA, mail)


def _deployment(kafka_bootstrap: str, ses_endpoint: str, workdir: Path, name: str, **env: str) -> Deployment:
    run = uuid.uuid4().hex[:8]
    dep = Deployment(run=run, bootstrap=kafka_bootstrap, ses_endpoint=ses_endpoint, workdir=workdir / name,
                     env={**worker_env(run, kafka_bootstrap, ses_endpoint, prefix=f"bench-{name}"), **env})
    ensure_topics(dep.settings)
    tenants_cli.publish([REPO_ROOT / "deploy" / "tenants"], dep.settings)
    return dep


def _emulator_ceiling(endpoint: str, run: str, seconds: float = 5.0, threads: int = 16) -> float:
    """Sends per second the emulator takes from plain boto3 calls, no Tidings involved."""
    factory_raw = b"From: bench@lagerhaus-nord.example\r\nTo: x@example.org\r\nSubject: ceiling\r\n\r\nhello\r\n"
    deadline = time.monotonic() + seconds

    def loop(i: int) -> int:
        client, sent = ses_client(endpoint), 0
        while time.monotonic() < deadline:
            client.send_email(
                FromEmailAddress="mail@lagerhaus-nord.example",
                Destination={"ToAddresses": [f"ceiling{i}.{run}@example.org"]},
                Content={"Raw": {"Data": factory_raw}},
            )
            sent += 1
        return sent

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(loop, range(threads)))
    return total / (time.monotonic() - started)


def _throughput(rate: int, kafka_bootstrap: str, ses_endpoint: str, workdir: Path) -> dict[str, Any]:
    with FaultProxy(ses_endpoint) as proxy:
        dep = _deployment(kafka_bootstrap, ses_endpoint, workdir, f"rate{rate}", TIDINGS_SES_ENDPOINT_URL=proxy.endpoint,
                          TIDINGS_SES_MAX_SEND_RATE=str(rate), TIDINGS_SENDER_CONCURRENCY=str(CONCURRENCY),
                          # permits for about two commit intervals of sending at the rate
                          TIDINGS_SENDER_MAX_UNCOMMITTED=os.environ.get("TIDINGS_BENCH_SENDER_UNCOMMITTED", str(max(200, 2 * rate))))
        factory = MailFactory(dep.run)
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20, "enable.idempotence": True})
        count = int(rate * SECONDS)
        partitions = dep.settings.partitions
        for n in range(count):
            key, value = factory.encode(n)
            producer.produce(dep.topics.outbound, key=key.encode(), value=value, partition=n % partitions)
            if n % 1000 == 0:
                producer.poll(0)
        producer.flush(60)
        worker = dep.start_worker()
        queued_at: dict[str, float] = {}
        try:
            _wait_sends(proxy, 1, timeout=120)
            drain_started = time.monotonic()
            while len(proxy.stats().accepted_sends) < count * 0.9 and time.monotonic() - drain_started < SECONDS * 20:
                key, value = factory.encode(len(queued_at), high=True)
                producer.produce(dep.topics.outbound_priority, key=key.encode(), value=value,
                                 partition=len(queued_at) % partitions)
                producer.flush(10)
                queued_at[key] = time.time()
                time.sleep(PRIORITY_EVERY_SECONDS)
            statuses = dep.wait_settled(count + len(queued_at), timeout=SECONDS * 30)
            waited = {
                lane: dep.metric(worker, "tidings_send_queue_seconds_sum", lane=lane)
                / max(1.0, dep.metric(worker, "tidings_send_queue_seconds_count", lane=lane))
                for lane in ("high", "normal")
            }
        finally:
            worker.stop()
        stats = proxy.stats()
        stamps = sorted(stats.accepted_sends)
        span = stamps[-1] - stamps[0]
        achieved = (len(stamps) - 1) / span
        queue = [
            next(r["at"] for r in statuses[key] if r["status"] == "SENT").timestamp() - at for key, at in queued_at.items()
        ]
        return {
            "rate": rate,
            "mails": count,
            "priority_mails": len(queued_at),
            "achieved_per_second": round(achieved, 1),
            "achieved_over_configured": round(achieved / rate, 3),
            "peak_in_one_second": stats.peak_sends(1.0),
            "priority_queue_p50_seconds": round(percentile(queue, 50), 3),
            "priority_queue_p99_seconds": round(percentile(queue, 99), 3),
            "extra_sends": len(stamps) - count - len(queued_at),
            "mean_seconds_to_first_request": {lane: round(v, 3) for lane, v in waited.items()},
        }


def _wait_sends(proxy: FaultProxy, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(proxy.stats().accepted_sends) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} sends reached the emulator within {timeout}s")
        time.sleep(0.1)


def _fault_runs(kafka_bootstrap: str, ses_endpoint: str, workdir: Path) -> dict[str, str]:
    results: dict[str, str] = {}

    def deployment(proxy: FaultProxy, name: str, rate: int) -> Deployment:
        return _deployment(kafka_bootstrap, ses_endpoint, workdir, name, TIDINGS_SES_ENDPOINT_URL=proxy.endpoint,
                           TIDINGS_SES_MAX_SEND_RATE=str(rate), TIDINGS_SENDER_CONCURRENCY="16")

    with FaultProxy(ses_endpoint) as proxy:
        dep = deployment(proxy, "kill", 200)
        worker = dep.start_worker()
        expected = publish_bookings(dep, range(2000))
        wait_arrived(dep, expected, 700, timeout=600)
        worker.kill()
        worker.start()
        dep.wait_settled(len(expected), timeout=900)
        unknown = dep.metric(worker, "tidings_delivery_unknown_outcomes_total")
        result = tally(dep, expected)
        worker.stop()
        results["sigkill_mid_2000"] = f"{result}; unknown outcomes counted {unknown:.0f} (in-flight bound 16)"
        print(f"\nsigkill_mid_2000: {results['sigkill_mid_2000']}", flush=True)
        assert result.lost == 0 and result.duplicates <= 16

    with FaultProxy(ses_endpoint) as proxy:
        dep = deployment(proxy, "throttle", 50)
        worker = dep.start_worker()
        worker.wait_serving()
        proxy.throttle(0.3, seed=3, seconds=60)
        expected = publish_bookings(dep, range(3500))
        dep.wait_settled(len(expected), timeout=900)
        result, stats = tally(dep, expected), proxy.stats()
        worker.stop()
        results["throttle_30pct_60s"] = (
            f"{result}; throttled answers {stats.faulted}; peak {stats.peak_sends(1.0)}/s (quota 50)"
        )
        print(f"\nthrottle_30pct_60s: {results['throttle_30pct_60s']}", flush=True)
        assert (result.lost, result.duplicates) == (0, 0) and stats.peak_sends(1.0) <= 50

    with FaultProxy(ses_endpoint) as proxy:
        dep = deployment(proxy, "outage", 200)
        worker = dep.start_worker()
        worker.wait_serving()
        proxy.unavailable(seconds=60)
        outage_started = time.monotonic()
        expected = publish_bookings(dep, range(1000))
        dep.wait_settled(len(expected), timeout=900)
        drained = time.monotonic() - outage_started
        result = tally(dep, expected)
        worker.stop()
        results["unavailable_60s"] = f"{result}; all sent {drained:.0f} s after the outage began"
        print(f"\nunavailable_60s: {results['unavailable_60s']}", flush=True)
        assert (result.lost, result.duplicates) == (0, 0)
    return results


@pytest.mark.timeout(3600)
def test_sender_throughput_priority_and_faults(kafka_bootstrap: str, ses_endpoint: str, tmp_path: Path) -> None:
    figures: dict[str, Any] = {"emulator_ceiling_per_second": round(_emulator_ceiling(ses_endpoint, uuid.uuid4().hex[:8]), 1)}
    figures["throughput"] = []
    for rate in RATES:
        figures["throughput"].append(_throughput(rate, kafka_bootstrap, ses_endpoint, tmp_path))
        print(f"\n{figures['throughput'][-1]}", flush=True)  # at once: a later scenario may fail
    figures["faults"] = _fault_runs(kafka_bootstrap, ses_endpoint, tmp_path) if FAULTS else {}
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(figures, indent=2))
    print(f"\nemulator ceiling: {figures['emulator_ceiling_per_second']}/s")
    for row in figures["throughput"]:
        print(row)
    for name, line in figures["faults"].items():
        print(f"{name}: {line}")
    for row in figures["throughput"]:
        assert row["peak_in_one_second"] <= row["rate"]
        assert row["extra_sends"] == 0
