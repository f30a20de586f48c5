"""The delivery ledger forgets ids after its retention, locally and in its compacted changelog."""

from __future__ import annotations

import datetime as dt

from deploy.local.samples import BOOKING_CREATED, booking_created
from tests.integration.harness import Deployment


def test_ledger_rows_older_than_the_retention_are_tombstoned_at_a_tick(deployment: Deployment) -> None:
    dep = deployment
    dep.env["TIDINGS_LEDGER_RETENTION_DAYS"] = "30"
    worker = dep.start_worker()
    topic = dep.topics.for_event(BOOKING_CREATED)
    for n in range(4):
        event = booking_created("boxit-london", n, email=dep.email(n))
        dep.publisher.publish(topic, BOOKING_CREATED, event, key=event["booking_id"])
    dep.publisher.flush()
    statuses = dep.wait_settled(4)
    sent = set(statuses)

    now = dt.datetime.now(dt.timezone.utc)
    dep.tick(now + dt.timedelta(days=29))  # younger than the retention: kept
    dep.wait_metric("tidings_ticks_total", dep.settings.partitions)
    assert dep.metric(worker, "tidings_ledger_expired_total") == 0

    dep.tick(now + dt.timedelta(days=31))
    dep.wait_metric("tidings_ticks_total", 2 * dep.settings.partitions)
    assert dep.wait_metric("tidings_ledger_expired_total", len(sent)) == len(sent)
    changelog = f"{dep.env['TIDINGS_APP_ID']}-delivery-ledger-changelog"
    records = dep.read_topic(changelog, 2 * len(sent))  # a write per state change, then one tombstone each
    tombstoned = {r.key().decode().strip('"') for r in records if r.value() is None}
    assert tombstoned == sent
