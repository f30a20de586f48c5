"""``/healthz`` and ``/readyz`` on a live worker (``streams/health.py``): alive as soon as it serves,
ready once its topics, feeds, partitions and tables are, with a JSON reason on every 503 before."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from deploy.local.samples import BOOKING_CREATED, booking_created
from deploy.local.worker import WorkerProcess
from tests.integration.harness import DEFAULT_DEADLINE_SECONDS, Deployment
from tests.tools import promtool


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_worker_is_alive_when_it_serves_and_ready_once_it_holds_its_partitions(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    worker.wait_serving()
    base = worker.metrics_url.removesuffix("/metrics")
    assert _get(f"{base}/healthz") == (200, {"status": "alive"})

    not_ready: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEFAULT_DEADLINE_SECONDS
    while True:
        worker.assert_alive()
        status, body = _get(f"{base}/readyz")
        if status == 200:
            break
        assert status == 503, body
        not_ready.append(body)
        assert time.monotonic() < deadline, f"not ready after {DEFAULT_DEADLINE_SECONDS}s: {body}"
        time.sleep(0.1)
    assert body["status"] == "ready" and body["reasons"] == []
    assert body["checks"]["topics"] and body["checks"]["assigned"] and body["checks"]["restored"]
    assert all(feeds for feeds in body["checks"]["feeds"].values()) and body["checks"]["partitions"] > 0
    assert all(b["status"] == "not ready" and b["reasons"] for b in not_ready)
    deployment.wait_metric("tidings_worker_ready", 1)


def test_a_live_workers_metrics_include_what_an_sre_needs_and_pass_promtool(deployment: Deployment) -> None:
    tool = promtool()
    worker = deployment.start_worker()
    worker.wait_serving()
    deployment.wait_metric("tidings_worker_ready", 1)
    event = booking_created("nobody-tenant", 1, email=deployment.email(1), locale="en")  # dead-lettered: committed
    deployment.publisher.publish(deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event,
                                 key=event["booking_id"])
    deployment.publisher.flush()
    deployment.wait_for("a consumer lag sample", lambda: _families(worker).get("tidings_consumer_lag_records") or None)
    # The dead-lettered event's offset commits: the commit is timed.
    deployment.wait_for("a timed commit", lambda: any(
        s.name == "tidings_commit_seconds_count" and s.value > 0 for s in _families(worker).get("tidings_commit_seconds", [])))
    families = _families(worker)
    # What the worker costs the brokers: the commit was a transaction's end, the event came by a fetch.
    requests = {(s.labels["client"], s.labels["api"]): s.value
                for s in families.get("tidings_kafka_requests_total", []) if s.name == "tidings_kafka_requests_total"}
    assert requests.get(("producer", "EndTxn"), 0) > 0 and requests.get(("producer", "Produce"), 0) > 0, requests
    assert requests.get(("consumer", "Fetch"), 0) > 0 and requests.get(("consumer", "JoinGroup"), 0) > 0, requests
    for name in ("tidings_build_info", "tidings_timer_oldest_due_seconds", "tidings_event_loop_lag_seconds",
                 "process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert families.get(name), name
    text = urllib.request.urlopen(worker.metrics_url, timeout=5).read()
    checked = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def _families(worker: WorkerProcess) -> dict[str, list[Any]]:
    text = urllib.request.urlopen(worker.metrics_url, timeout=5).read().decode()
    return {f.name if f.type != "counter" else f.name + "_total": f.samples for f in text_string_to_metric_families(text)}
