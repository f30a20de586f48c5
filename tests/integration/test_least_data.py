"""Least data: what must not be kept is not kept, and secrets reach only their own mail.

- appointment.requested and contact_form.submitted (seed 004: "not stored on the platform"):
  after their mails are sent, no table changelog of the worker holds any of their content.
- Password-reset links: delivered in the reset mail, and nowhere else — not in the worker's log,
  not in the dead-letter copy of a reset event that could not be sent, not in any changelog.
"""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.domain.evaluate import field_at
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from tests.integration.harness import Deployment

CATALOG = Catalog.load()
REQUESTED = "tidings.advisors.AppointmentRequested"
CONTACT = "tidings.advisors.ContactFormSubmitted"
RESET = "tidings.storage.PasswordResetRequested"


def _all_bytes_of(deployment: Deployment, topics: list[str]) -> bytes:
    """Every key, value and header of every record of ``topics``, concatenated."""
    consumer = Consumer({"bootstrap.servers": deployment.bootstrap, "group.id": f"scan-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    blob = bytearray()
    try:
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, p, low)])
                while True:
                    msgs = consumer.consume(num_messages=1000, timeout=2)
                    for m in msgs:
                        blob += (m.key() or b"") + (m.value() or b"") + b"".join(v or b"" for _, v in (m.headers() or []))
                    if not msgs or msgs[-1].offset() >= high - 1:
                        break
    finally:
        consumer.close()
    return bytes(blob)


def _publish(deployment: Deployment, type_name: str, event: dict[str, Any]) -> None:
    trigger = CATALOG.for_event(type_name)[0]
    deployment.publisher.publish(
        deployment.topics.for_event(type_name), type_name, event, key=str(field_at(event, trigger.rule.entity))
    )


def test_requests_that_are_not_stored_leave_no_copy_and_secrets_reach_only_their_mail(deployment: Deployment) -> None:
    marker = f"private-{uuid.uuid4().hex}"
    secret = f"https://portal.example/reset?token={uuid.uuid4().hex}"

    def person(tag: str):  # type: ignore[no-untyped-def]
        return lambda path, p: {**p, "email": deployment.email(f"{tag}-{path}".replace(".", "-"))}

    requested = sample_event(CATALOG.samples, REQUESTED, "beraterfinder", recipient=person("req"))
    requested["message"] = f"Bitte rufen Sie mich an. {marker}"
    contact = sample_event(CATALOG.samples, CONTACT, "beraterfinder", recipient=person("contact"))
    contact["message"] = f"Frage zum Angebot {marker}"
    reset = sample_event(CATALOG.samples, RESET, "boxit-london", recipient=person("reset"))
    reset["reset_url"] = secret
    undeliverable_reset = sample_event(CATALOG.samples, RESET, "no-such-tenant", recipient=person("ghost"))
    undeliverable_reset["reset_url"] = secret + "-ghost"

    worker = deployment.start_worker()
    for type_name, event in ((REQUESTED, requested), (CONTACT, contact), (RESET, reset), (RESET, undeliverable_reset)):
        _publish(deployment, type_name, event)
    deployment.publisher.flush()

    mails = deployment.wait_for_mails(5)  # request: advisor + customer, contact: advisor + customer, reset
    advisor_mails = [m for m in mails if "req-advisor" in m.destinations[0] or "contact-advisor" in m.destinations[0]]
    assert len(advisor_mails) == 2 and all(marker in m.part("plain") for m in advisor_mails)
    (reset_mail,) = [m for m in mails if "reset-" in m.destinations[0]]
    assert secret in reset_mail.part("plain")
    dead = deployment.read_topic(deployment.topics.dead_letter, 1)
    assert dict(dead[0].headers())["tidings.redacted"] == b"reset_url"

    changelogs = [t for t in _topics(deployment) if t.startswith(deployment.settings.app_id) and "changelog" in t]
    assert changelogs, "the worker should have at least the delivery ledger's changelog"
    kept = _all_bytes_of(deployment, changelogs)
    assert marker.encode() not in kept
    assert secret.encode() not in kept
    assert (secret + "-ghost").encode() not in _all_bytes_of(deployment, [deployment.topics.dead_letter])

    worker.stop()
    log = worker.log_file.read_text(errors="replace")
    assert marker not in log and secret not in log


def _topics(deployment: Deployment) -> list[str]:
    consumer = Consumer({"bootstrap.servers": deployment.bootstrap, "group.id": "list"})
    try:
        return list(consumer.list_topics(timeout=10).topics)
    finally:
        consumer.close()
