"""Tenant configuration on the compacted tenants topic, applied by a running worker.

One worker runs throughout, never restarted: a brand change published with the CLI's function
reaches the next mail; bad records on the tenants topic are ignored (the worker keeps the previous
version and keeps going); a removed tenant's next event is dead-lettered ``unknown_tenant``.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import yaml
from confluent_kafka import Producer

from deploy.local.samples import BOOKING_CREATED, booking_created
from deploy.local.worker import WorkerProcess
from streams.settings import REPO_ROOT
from streams.tenants import cli
from tests.integration.harness import Deployment

TENANT = "boxit-london"
OLD_BRAND = "BoxIt Storage"
NEW_BRAND = "BoxIt Self Storage"


def _updates(worker: WorkerProcess) -> dict[str, float]:
    """``tidings_tenant_updates_total`` by outcome, from the worker's /metrics."""
    text = urllib.request.urlopen(worker.metrics_url, timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tidings_tenant_updates_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('outcome="')[1].split('"')[0]] = float(value)
        elif line.startswith("tidings_tenants_loaded "):
            out["loaded"] = float(line.rsplit(" ", 1)[1])
    return out


def _wait_updates(deployment: Deployment, worker: WorkerProcess, **expected: float) -> None:
    seen: dict[str, float] = {}

    def probe() -> bool:
        seen.update(_updates(worker) if _serving(worker) else {})
        return all(seen.get(k, 0.0) >= v for k, v in expected.items())

    deployment.wait_for(lambda: f"tenant updates {expected} (seen {seen})", probe)


def _serving(worker: WorkerProcess) -> bool:
    try:
        urllib.request.urlopen(worker.metrics_url, timeout=2).close()
        return True
    except OSError:
        return False


def _publish_booking(deployment: Deployment, n: int, tenant: str = TENANT) -> str:
    event = booking_created(tenant, n, email=deployment.email(n), locale="en")
    deployment.publisher.publish(deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event, key=event["booking_id"])
    deployment.publisher.flush()
    return deployment.email(n)


def _mail_to(deployment: Deployment, address: str):  # type: ignore[no-untyped-def]
    def probe():  # type: ignore[no-untyped-def]
        return next((m for m in deployment.my_mails() if m.destinations[0] == address), None)

    return deployment.wait_for(f"a mail to {address}", probe)


def test_tenant_changes_reach_a_running_worker(deployment: Deployment, tmp_path: Path) -> None:
    worker = deployment.start_worker()
    examples = len(list((REPO_ROOT / "deploy" / "tenants").glob("*.yaml")))
    _wait_updates(deployment, worker, applied=examples, loaded=examples)

    first = _mail_to(deployment, _publish_booking(deployment, 0))
    assert OLD_BRAND in first.part("html") and NEW_BRAND not in first.part("html")

    # A brand change, published the way `tidings-tenants publish` does it.
    data = yaml.safe_load((REPO_ROOT / "deploy" / "tenants" / f"{TENANT}.yaml").read_text(encoding="utf-8"))
    data["brand"]["name"] = NEW_BRAND
    changed = tmp_path / f"{TENANT}.yaml"
    changed.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    cli.publish([changed], deployment.settings)
    _wait_updates(deployment, worker, applied=examples + 1)

    # Bad records after it: not JSON, and JSON that is no valid tenant. Both are ignored.
    producer = Producer({"bootstrap.servers": deployment.bootstrap})
    producer.produce(deployment.topics.tenants, key=TENANT.encode(), value=b"\x00 definitely not json")
    producer.produce(deployment.topics.tenants, key=TENANT.encode(), value=changed.read_text().encode())  # YAML, not JSON
    producer.produce(deployment.topics.tenants, key=TENANT.encode(), value=b'{"tenant_id": "boxit-london", "packs": []}')
    assert producer.flush(30) == 0
    _wait_updates(deployment, worker, rejected=3)
    assert "ignored the record for tenant 'boxit-london'" in worker.log_file.read_text(errors="replace")

    second = _mail_to(deployment, _publish_booking(deployment, 1))
    assert NEW_BRAND in second.part("html") and NEW_BRAND in second.part("plain")
    assert worker.starts == 1

    # Removed: the tenant's next event is dead-lettered; other tenants' events still go out.
    assert cli.main(["remove", TENANT], settings=deployment.settings) == 0
    _wait_updates(deployment, worker, removed=1)
    _publish_booking(deployment, 2)
    _mail_to(deployment, _publish_booking(deployment, 3, tenant="lagerhaus-nord"))
    (dead,) = deployment.read_topic(deployment.topics.dead_letter, 1)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert headers["tidings.reason"] == "unknown_tenant"
    assert {m.destinations[0] for m in deployment.my_mails()} == {deployment.email(n) for n in (0, 1, 3)}
    assert _updates(worker)["loaded"] == examples - 1
