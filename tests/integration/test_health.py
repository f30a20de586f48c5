"""``/healthz`` and ``/readyz`` on a live worker (``streams/health.py``): alive as soon as it serves,
ready once its topics, feeds, partitions and tables are, with a JSON reason on every 503 before."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from tests.integration.harness import DEFAULT_DEADLINE_SECONDS, Deployment


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
