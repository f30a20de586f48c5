"""No tenant can stop, slow or read another (issue 14): hostile templates on a real worker.

Hostile tenants (one per hostile template: the issue's, then the generated set of
``tests/unit/test_budgets.py``) are published through ``tidings-tenants publish``'s checks; a
template the check refuses is named and left out. While their events arrive continuously, another
tenant's events flow: every one of its mails arrives, and the latency it gains over a quiet worker
is measured; every hostile mail is dead-lettered ``render_failed`` with the budget that stopped it;
a SIGTERM in the middle of the attack stops the worker in seconds.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import pytest
import yaml

from deploy.local.samples import BOOKING_CREATED, booking_created
from deploy.local.ses_emulator import sent_mails
from streams.domain.rules import Catalog
from streams.tenants import cli
from tests.hostile import CSS_BOMB, tenant_data
from tests.integration.harness import Deployment
from tests.unit.test_budgets import GENERATED, KNOWN

CATALOG = Catalog.load()
VICTIM = "lagerhaus-nord"
HOSTILE_RATE = 4.0  # hostile events per second, for as long as the attack lasts
BASELINE_MAILS = 4
ATTACK_MAILS = 8
ADDED_LATENCY_TARGET = 1.0  # seconds (issue 14), for a worker that gets the CPU it asks for
# Arrival is seen by polling the emulator; a mail may wait up to one poll before it is seen.
POLL_SECONDS = 0.2
STOP_WITHIN_SECONDS = 15.0


def _overload() -> float:
    """How many times over its cores this machine is loaded (1.0 when it is not).

    The budgets bound CPU time; on a machine whose run queue is many times its cores (the shared
    2-core development machine has reached a load of 29), every CPU second takes that many wall
    seconds, for the worker, the broker and the emulator alike. The targets are stretched by it,
    and the figures printed with it, rather than failing for what no worker could do.
    """
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def _hostile_tenants(folder: Path, deployment: Deployment) -> list[tuple[str, str]]:
    """One tenant file per hostile template that passes the publish checks: ``(tenant_id, template)``."""
    folder.mkdir()
    base = tenant_data()
    accepted: list[tuple[str, str]] = []
    for n, source in enumerate([*KNOWN, CSS_BOMB, *GENERATED]):
        tenant_id = f"hostile-{n:03d}"
        data = {**base, "tenant_id": tenant_id, "templates": {
            "storage/booking.created/en/subject.txt": "Booking {{ booking_id }}",
            "storage/booking.created/en/body.html": source,
            "storage/booking.created/en/body.txt": "{{ booking_id }}",
        }}
        path = folder / f"{tenant_id}.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        _, problems = cli.check([path], deployment.settings, CATALOG)
        if problems:
            path.unlink()  # refused at publish time (e.g. a merge tag it does not have): not an attack that reaches a worker
            continue
        accepted.append((tenant_id, source))
    return accepted


class _Attack(threading.Thread):
    """Publishes hostile events round-robin at ``HOSTILE_RATE`` until stopped."""

    def __init__(self, deployment: Deployment, tenants: list[str]) -> None:
        super().__init__(daemon=True)
        self.deployment, self.tenants = deployment, tenants
        self.sent: dict[str, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        topic = self.deployment.topics.for_event(BOOKING_CREATED)
        n = 0
        while not self.stopping.is_set():
            tenant = self.tenants[n % len(self.tenants)]
            event = booking_created(tenant, n, email=self.deployment.email(f"h{n}"), booking_id=f"{tenant}-{n}")
            self.deployment.publisher.publish(topic, BOOKING_CREATED, event, key=event["booking_id"])
            self.deployment.publisher.flush()
            self.sent[tenant] = self.sent.get(tenant, 0) + 1
            n += 1
            self.stopping.wait(1 / HOSTILE_RATE)


def _victim_latency(deployment: Deployment, n: int) -> float:
    """Publish one event of the other tenant and wait for its mail: seconds from publish to SES."""
    address = deployment.email(f"victim{n}")
    event = booking_created(VICTIM, n, email=address, booking_id=f"V-{deployment.run}-{n}")
    started = time.monotonic()
    deployment.publisher.publish(deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event, key=event["booking_id"])
    deployment.publisher.flush()

    def arrived() -> float | None:
        if any(address in d for m in sent_mails(deployment.ses_endpoint) for d in m.destinations):
            return time.monotonic() - started
        return None

    return deployment.wait_for(f"the victim's mail {n}", arrived, timeout=60)


@pytest.mark.timeout(900)  # ~110 tenants to check and publish, an attack of ~30 s, on a shared machine
def test_hostile_templates_fail_their_own_mails_and_nothing_else(deployment: Deployment, tmp_path: Path) -> None:
    hostile = _hostile_tenants(tmp_path / "hostile", deployment)
    assert len(hostile) >= len(KNOWN) + len(GENERATED) - 5, f"only {len(hostile)} hostile templates passed the checks"
    cli.publish([tmp_path / "hostile"], deployment.settings)
    worker = deployment.start_worker()
    worker.wait_serving()

    baseline = [_victim_latency(deployment, n) for n in range(BASELINE_MAILS)]
    attack = _Attack(deployment, [t for t, _ in hostile])
    attack.start()
    try:
        under_attack = [_victim_latency(deployment, BASELINE_MAILS + n) for n in range(ATTACK_MAILS)]
        # Every hostile template rendered at least once before the SIGTERM.
        deployment.wait_for(
            "every hostile tenant's event published", lambda: len(attack.sent) >= len(hostile) or None,
            timeout=len(hostile) / HOSTILE_RATE + 60,
        )
        dead = deployment.read_topic(deployment.topics.dead_letter, len(hostile), timeout=180)
        stop_started = time.monotonic()
        worker.stop(timeout=60)
        stopped_in = time.monotonic() - stop_started
    finally:
        attack.stopping.set()
        attack.join(10)

    overload = _overload()
    added = statistics.median(under_attack) - statistics.median(baseline)
    worst_added = max(under_attack) - statistics.median(baseline)
    print(
        f"\nvictim latency: quiet median {statistics.median(baseline):.2f} s; under attack median "
        f"{statistics.median(under_attack):.2f} s, max {max(under_attack):.2f} s; added median {added:.2f} s, "
        f"worst {worst_added:.2f} s; {len(hostile)} hostile templates, {sum(attack.sent.values())} hostile events; "
        f"SIGTERM -> exit in {stopped_in:.1f} s; machine load {overload:.1f} x its cores"
    )
    assert added < ADDED_LATENCY_TARGET * overload + POLL_SECONDS, f"added median latency {added:.2f} s (load x{overload:.1f})"
    assert stopped_in < STOP_WITHIN_SECONDS * overload, f"stopped in {stopped_in:.1f} s (load x{overload:.1f})"

    budgets: dict[str, str] = {}
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers()}
        tenant = record.key().decode().rsplit("-", 1)[0]
        assert headers["tidings.reason"] == "render_failed", headers
        assert "render budget '" in headers["tidings.detail"], headers["tidings.detail"]
        budgets[tenant] = headers["tidings.detail"].split("render budget '")[1].split("'")[0]
    assert set(budgets) == {t for t, _ in hostile}, sorted({t for t, _ in hostile} - set(budgets))
    assert set(budgets.values()) <= {"iterations", "cpu_time", "output", "number_size", "depth", "html", "css"}
    print("stopped by:", {b: sum(1 for v in budgets.values() if v == b) for b in sorted(set(budgets.values()))})
    victims = {deployment.email(f"victim{n}") for n in range(BASELINE_MAILS + ATTACK_MAILS)}
    mails = deployment.my_mails()
    assert len(mails) == len(victims), [m.destinations for m in mails]
    assert all(any(v in d for v in victims) for m in mails for d in m.destinations)
