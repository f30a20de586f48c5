"""A worker stopped and started again sends every mail exactly once."""

from __future__ import annotations

import collections

from deploy.local.samples import BOOKING_CREATED, booking_created
from tests.integration.harness import Deployment


def _publish(deployment: Deployment, numbers: range) -> None:
    topic = deployment.topics.for_event(BOOKING_CREATED)
    for n in numbers:
        event = booking_created("lagerhaus-nord", n, email=deployment.email(n))
        deployment.publisher.publish(topic, BOOKING_CREATED, event, key=event["booking_id"])
    deployment.publisher.flush()


def _publish_sentinels(deployment: Deployment) -> list[str]:
    """One event on every partition: once all their mails are out, everything before them is too.

    Each partition is processed in order, and a mail stays on its event's partition number, so a
    sentinel's mail proves its partition was drained by both the ingest and the sender agent.
    """
    topic = deployment.topics.for_event(BOOKING_CREATED)
    addresses = []
    for p in range(deployment.settings.partitions):
        event = booking_created("boxit-london", 900 + p, email=deployment.email(f"sentinel{p}"))
        deployment.publisher.publish(topic, BOOKING_CREATED, event, key=event["booking_id"], partition=p)
        addresses.append(deployment.email(f"sentinel{p}"))
    deployment.publisher.flush()
    return addresses


def test_graceful_restart_sends_every_mail_exactly_once(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    _publish(deployment, range(0, 20))
    deployment.wait_for_mails(20)
    assert worker.stop() == 0

    _publish(deployment, range(20, 40))  # published while no worker runs
    worker.start()
    sentinels = _publish_sentinels(deployment)
    expected = {deployment.email(n) for n in range(40)} | set(sentinels)
    missing: set[str] = set()

    def all_arrived() -> bool:
        missing.clear()
        missing.update(expected - {m.destinations[0] for m in deployment.my_mails()})
        return not missing

    deployment.wait_for(lambda: f"every mail; still missing {sorted(missing)}", all_arrived)
    mails = deployment.my_mails()

    per_recipient = collections.Counter(m.destinations[0] for m in mails)
    assert set(per_recipient) == expected
    assert {a: c for a, c in per_recipient.items() if c != 1} == {}
