"""A real Prometheus (Debian's ``prometheus``) with the project's rules, scraping a live worker
while mail flows: every dashboard query evaluates through the HTTP API (and those the scenario
feeds return data), ``TidingsSesSendingBlocked`` fires for real while the fault proxy answers
``SendingPausedException`` and resolves once it stops, and headless Chromium screenshots
Prometheus' graph page for two dashboard queries into ``.tidings/prometheus/`` for a person to see.

Needs Debian's ``prometheus`` and ``chromium`` packages (``.ci/run`` installs both); skipped
without them, except under ``CI=true``.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deploy.grafana import dashboard
from deploy.local.fault_proxy import FaultProxy
from deploy.local.samples import BOOKING_CREATED, booking_created
from deploy.local.support import free_port, terminate
from streams.settings import REPO_ROOT
from tests.integration.harness import Deployment
from tests.integration.test_prometheus_rules import RULES
from tests.tools import debian_tool, prometheus

T = TypeVar("T")
TENANT = "lagerhaus-nord"
SCREENSHOTS = REPO_ROOT / ".tidings" / "prometheus"
START_SECONDS = 60.0
# The alert's "for: 1m", plus scrapes and evaluations every second, plus the sender noticing.
ALERT_SECONDS = 180.0

# Queries the scenario below gives data (mail sent, a record dead-lettered, a worker ready).
EXPECT_DATA = {
    "Events in", "Mails rendered", "Mails sent", "Dead-lettered", "Event to sent (p50, p99)", "Render p99",
    "Consumer lag per topic", "Workers ready", "Pending", "Partitions with a built timer index",
    "Oldest due, not fired",
    "CPU", "RSS", "Event loop lag", "Build",
}
GRAPHED = ("sum(rate(tidings_emails_sent_total[1m]))", "sum by (topic) (tidings_consumer_lag_records)")


def _wait(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.5)


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "tidings-worker", "static_configs": [{"targets": [target]}]}],
        }))
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _wait("Prometheus ready", self._ready, START_SECONDS)

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]  # type: ignore[no-any-return]

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == alertname and a["state"] == "firing"]

    def stop(self) -> None:
        terminate(self.process, 10.0)


@pytest.fixture
def proxy(deployment: Deployment) -> Iterator[FaultProxy]:
    with FaultProxy(deployment.ses_endpoint) as p:
        deployment.env["TIDINGS_SES_ENDPOINT_URL"] = p.endpoint
        yield p


def _book(deployment: Deployment, n: int) -> None:
    event = booking_created(TENANT, n, email=deployment.email(n), locale="de")
    deployment.publisher.publish(deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event, key=event["booking_id"])


def _screenshot(prom: Prometheus, png: Path, tmp_path: Path) -> None:
    params: dict[str, str] = {}
    for n, expr in enumerate(GRAPHED):
        params.update({f"g{n}.expr": expr, f"g{n}.tab": "0", f"g{n}.range_input": "1m"})
    url = f"{prom.url}/graph?{urllib.parse.urlencode(params)}"
    command = [
        debian_tool("chromium", "chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=15000",
        f"--screenshot={png}", "--window-size=1400,1600", url,
    ]
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file() and png.stat().st_size > 10_000, f"no screenshot of {url} (exit {done.returncode}):\n{done.stderr[-2000:]}"


def test_prometheus_scrapes_a_live_worker_evaluates_the_dashboard_and_an_alert_fires_and_resolves(
    deployment: Deployment, proxy: FaultProxy, tmp_path: Path
) -> None:
    binary = prometheus()
    worker = deployment.start_worker()
    worker.wait_serving()
    deployment.wait_metric("tidings_worker_ready", 1)
    prom = Prometheus(binary, tmp_path / "prometheus", worker.metrics_url.removeprefix("http://").removesuffix("/metrics"))
    try:
        for n in range(20):
            _book(deployment, n)
        stranger = booking_created("no-such-tenant", 99, email=deployment.email(99), locale="de")
        deployment.publisher.publish(deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, stranger,
                                     key=stranger["booking_id"])
        deployment.publisher.flush()
        deployment.wait_metric("tidings_emails_sent_total", 20)
        deployment.wait_metric("tidings_dead_letters_total", 1)
        _wait("Prometheus to see the 20 mails and the dead letter", lambda: prom.query(
            "sum(tidings_emails_sent_total) >= 20 and on() sum(tidings_dead_letters_total) >= 1"), 60)

        # Every panel's query evaluates; those the scenario feeds return data (a rate once two
        # scrapes of its counter fell in the window).
        queries = dashboard.queries(json.loads(dashboard.OUT.read_text()))
        empty: list[str] = []

        def all_answered() -> bool:
            results: dict[str, list[list[dict[str, Any]]]] = {}
            for title, expr in queries:
                promql = expr.replace("$__rate_interval", "1m").replace("$tenant", ".*").replace("$trigger", ".*")
                results.setdefault(title, []).append(prom.query(promql))
            empty[:] = sorted(title for title in EXPECT_DATA if not any(results[title]))
            return not empty

        try:
            _wait("every dashboard panel the scenario feeds to have data", all_answered, 60)
        except AssertionError as e:
            raise AssertionError(f"{e}; panels without data: {empty}") from None

        _screenshot(prom, SCREENSHOTS / "graph.png", tmp_path)

        # SES pauses the account: the sender holds, the gauge rises, the alert fires after its minute.
        assert prom.firing("TidingsSesSendingBlocked") == []
        proxy.pause()
        _book(deployment, 100)
        deployment.publisher.flush()
        deployment.wait_metric("tidings_sender_blocked", 1)
        fired = _wait("TidingsSesSendingBlocked firing", lambda: prom.firing("TidingsSesSendingBlocked"), ALERT_SECONDS)
        assert fired[0]["labels"]["severity"] == "critical"
        assert fired[0]["annotations"]["runbook_url"].endswith("#tidingssessendingblocked")

        # Sending resumes: the held mail goes out, the alert resolves.
        proxy.heal()
        deployment.wait_metric("tidings_emails_sent_total", 21)
        try:
            _wait("TidingsSesSendingBlocked resolved", lambda: prom.firing("TidingsSesSendingBlocked") == [] or None, 90)
        except AssertionError as e:
            raise AssertionError(f"{e}: blocked={prom.query('tidings_sender_blocked')} "
                                 f"alerts={prom.firing('TidingsSesSendingBlocked')}") from None
    finally:
        prom.stop()
