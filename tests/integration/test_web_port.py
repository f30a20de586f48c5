"""The worker's web port serves Tidings' own pages and nothing of Faust's (tables hold personal data)."""

from __future__ import annotations

import urllib.error
import urllib.request

from tests.integration.harness import Deployment

FAUST_PATHS = (
    "/", "/table/", "/table/storage.bookings/", "/table/storage.bookings/boxit-london%2FBK-000101/",
    "/table/delivery-ledger/", "/router/", "/router/storage.bookings/x/", "/graph/", "/stats/", "/performance/",
    "/assignments/", "/signal/", "/does-not-exist",
)


def _status(url: str) -> int:
    try:
        return int(urllib.request.urlopen(url, timeout=5).status)
    except urllib.error.HTTPError as e:
        return e.code


def test_only_tidings_own_paths_answer(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    worker.wait_serving()
    base = worker.metrics_url.removesuffix("/metrics")
    assert _status(f"{base}/metrics") == 200
    assert _status(f"{base}/unsubscribe/not-a-token") == 400  # ours: answers, and refuses the token
    answered = {path: _status(base + path) for path in FAUST_PATHS}
    assert answered == {path: 404 for path in FAUST_PATHS}
