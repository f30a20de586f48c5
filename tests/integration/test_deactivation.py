"""A customer the operator deletes (seed 002) gets no mail of any trigger until restored.

On the real broker with one worker and time moved by ticks: a charging customer with a station is
deactivated; then a station issue (an event trigger) and a station outage (the timed
``evse.connectivity_lost``) both happen, and neither is mailed: each is reported SUPPRESSED with
reason ``customer_inactive`` on the delivery-status topic and counted. After the reactivation the
next issue and the next outage are mailed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.samples import new_envelope
from streams.settings import REPO_ROOT
from tests.integration.harness import Deployment

TENANT = "voltpark-nl"
UTC = dt.timezone.utc
MINUTE = dt.timedelta(minutes=1)
CODEC = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))


class Story:
    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.worker = dep.start_worker()
        self.worker.wait_serving()
        self.updates = 0
        self.ticks = 0

    def publish(self, type_name: str, at: dt.datetime, key: str, *, feeds_state: bool, **fields: Any) -> dict[str, Any]:
        record = {"envelope": new_envelope(TENANT, now=at, producer="test"), **fields}
        self.dep.publisher.publish(self.dep.topics.for_event(type_name), type_name, record, key=key)
        self.dep.publisher.flush()
        if feeds_state:  # events and ticks are not ordered against each other: wait before moving time
            self.updates += 1
            self.dep.wait_metric("tidings_entity_updates_total", self.updates)
        return record

    def tick(self, start: dt.datetime, until: dt.datetime) -> None:
        instants = []
        while start <= until:
            instants.append(start)
            start += MINUTE
        self.dep.tick(*instants)
        self.ticks += len(instants) * self.dep.settings.partitions
        self.dep.wait_metric("tidings_ticks_total", self.ticks)

    def inactive_customers(self, expected: int) -> None:
        self.dep.wait_for(
            f"tidings_inactive_customers == {expected}",
            lambda: self.dep.metric(self.worker, "tidings_inactive_customers") == expected or None,
        )


def test_a_deactivated_customer_gets_nothing_until_reactivated(deployment: Deployment) -> None:
    story = Story(deployment)
    t0 = dt.datetime.now(UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=3)
    customer = {"id": f"CU-{deployment.run}", "email": deployment.email("owner"), "name": "Lotte Bakker",
                "locale": "nl", "time_zone": None}
    station = {"station_id": f"ST-{deployment.run}", "customer": customer, "station_name": "Thuislader",
               "station_address": None, "station_url": "https://voltpark.example/st"}
    key = station["station_id"]
    story.publish("tidings.charging.StationRegistered", t0, key, feeds_state=True, **station)
    story.publish("tidings.charging.StationHeartbeat", t0, key, feeds_state=True, station_id=key, seen_at=t0)

    story.publish("tidings.charging.CustomerDeactivated", t0 + MINUTE, customer["id"], feeds_state=True,
                  customer_id=customer["id"], reason="deleted by the operator")
    story.inactive_customers(1)

    def issue(at: dt.datetime) -> dict[str, Any]:
        return story.publish(
            "tidings.charging.StationIssueDetected", at, key, feeds_state=False, **station,
            evse_id="NL*VPK*E1*1", issue="SESSION_FAILURES", detected_at=at,
        )

    skipped_issue = issue(t0 + 2 * MINUTE)
    story.tick(t0, t0 + 30 * MINUTE)  # silent since t0: the outage timer fires at t0 + 15 min
    deployment.wait_metric("tidings_mails_suppressed_total", 2, reason="customer_inactive", tenant=TENANT)

    statuses = [CODEC.decode(m.value()).record for m in deployment.read_topic(deployment.topics.delivery_status, 2)]
    assert sorted((s["trigger"], s["status"], s["reason"]) for s in statuses) == [
        ("evse.connectivity_lost", "SUPPRESSED", "customer_inactive"),
        ("evse.issue_detected", "SUPPRESSED", "customer_inactive"),
    ]
    assert {s["source_event_id"] for s in statuses if s["trigger"] == "evse.issue_detected"} == {
        skipped_issue["envelope"]["event_id"]
    }
    assert deployment.metric(story.worker, "tidings_timers_fired_total") == 1
    assert deployment.my_mails() == []

    story.publish("tidings.charging.CustomerReactivated", t0 + 40 * MINUTE, customer["id"], feeds_state=True,
                  customer_id=customer["id"])
    story.inactive_customers(0)
    issue(t0 + 41 * MINUTE)
    story.publish("tidings.charging.StationHeartbeat", t0 + 42 * MINUTE, key, feeds_state=True, station_id=key,
                  seen_at=t0 + 42 * MINUTE)
    story.tick(t0 + 42 * MINUTE, t0 + 70 * MINUTE)  # a second outage, from minute 42

    mails = deployment.wait_for_mails(2)
    assert sorted(m.header("X-Tidings-Trigger") for m in mails) == [
        "charging/evse.connectivity_lost", "charging/evse.issue_detected"
    ]
    assert {m.destinations[0] for m in mails} == {customer["email"]}
    assert deployment.metric(story.worker, "tidings_mails_suppressed_total", reason="customer_inactive") == 2
