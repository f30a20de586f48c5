"""Worker roles on the real broker: the stateless lane needs no stateful worker, and a split
deployment picks up where one ``all`` worker stood, every mail once.
"""

from __future__ import annotations

import collections
import datetime as dt
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.samples import sample_event
from streams.runtime.groups import adopt_offsets
from streams.settings import REPO_ROOT
from tests.integration.harness import Deployment

RESET = "tidings.storage.PasswordResetRequested"
TENANT = "lagerhaus-nord"
CUSTOMER = "CU-ROLES-1"  # every reset of this test on one key, hence one partition, in order


def _reset(deployment: Deployment, n: int) -> str:
    email = deployment.email(f"reset{n}")
    event = sample_event(deployment.topics.catalog.samples, RESET, TENANT, recipient=lambda path, p: {**p, "email": email})
    event["customer_id"] = CUSTOMER
    event["expires_at"] = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    deployment.publisher.publish(deployment.topics.for_event(RESET), RESET, event, key=CUSTOMER)
    deployment.publisher.flush()
    return email


def _booking(deployment: Deployment, n: int, *, topic: str | None = None) -> str:
    event = booking_created(TENANT, n, email=deployment.email(f"booking{n}"))
    deployment.publisher.publish(topic or deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event,
                                 key=event["booking_id"])
    deployment.publisher.flush()
    return deployment.email(f"booking{n}")


def _recipients(records: list[Any], codec: SingleObjectCodec) -> list[str]:
    return [codec.decode(r.value()).record["to_address"] for r in records]


def test_a_split_deployment_sends_resets_without_a_stateful_worker_and_every_mail_once(deployment: Deployment) -> None:
    codec = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))
    everything = deployment.start_worker("all")
    sent = {_reset(deployment, 1), _booking(deployment, 1)}
    deployment.wait_for_mails(2)
    assert everything.stop() == 0

    # Only the stateless lane runs: a reset still reaches the priority topic, and the lane's new
    # consumer group starts where the all worker's stood, so the first reset is not rendered again
    # (its copy would precede the second on their shared partition).
    lane = deployment.start_worker("lane", TIDINGS_ROLE="stateless")
    # Dashboards tell the lane's workers apart by their build info.
    deployment.wait_for("the lane's build info", lambda: deployment.metric(lane, "tidings_build_info", role="stateless") == 1)
    second = _reset(deployment, 2)
    booking = _booking(deployment, 2)  # a stateful topic: waits for the stateful worker
    priority = deployment.read_topic(deployment.topics.outbound_priority, 2)
    assert sorted(_recipients(priority, codec)) == sorted([deployment.email("reset1"), second])

    deployment.start_worker("stateful", TIDINGS_ROLE="stateful")
    sent |= {second, booking}
    mails = deployment.wait_for_mails(len(sent))
    per_recipient = collections.Counter(m.destinations[0] for m in mails)
    assert set(per_recipient) == sent
    assert {a: c for a, c in per_recipient.items() if c != 1} == {}


def test_the_lane_dead_letters_an_event_that_updates_an_entity(deployment: Deployment) -> None:
    deployment.start_worker("lane", TIDINGS_ROLE="stateless")
    _booking(deployment, 3, topic=deployment.topics.for_event(RESET))  # the wrong topic: a lane topic
    [letter] = deployment.read_topic(deployment.topics.dead_letter, 1)
    headers = {k: v.decode() for k, v in letter.headers()}
    assert headers["tidings.reason"] == "stateful_event"
    assert headers["tidings.stage"] == "state"
    assert not deployment.my_mails()


def test_offsets_are_handed_over_once_and_never_to_a_group_with_members(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    topic, source, target, busy = f"roles-{run}", f"src-{run}", f"dst-{run}", f"busy-{run}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)

    def consumer(group: str) -> Consumer:
        return Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False})

    committer = consumer(source)
    committer.commit(offsets=[TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 7)], asynchronous=False)
    committer.close()

    assert adopt_offsets(kafka_bootstrap, source, target, [topic], 2) == {(topic, 0): 5, (topic, 1): 7}
    # The target has offsets now: a second worker of the role changes nothing.
    assert adopt_offsets(kafka_bootstrap, source, target, [topic], 2) == {}

    # A group another worker already joined (and has not committed in yet) is left alone.
    member = consumer(busy)
    member.subscribe([topic])
    deadline = time.monotonic() + 60
    while not member.assignment():
        member.poll(0.2)
        assert time.monotonic() < deadline, "the member never got its assignment"
    try:
        assert adopt_offsets(kafka_bootstrap, source, busy, [topic], 2) == {}
    finally:
        member.close()
    admin.delete_topics([topic])
