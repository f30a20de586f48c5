"""Bad inbound records go to the dead-letter topic with a reason; the stream goes on."""

from __future__ import annotations

import datetime as dt
import os
import urllib.request

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.codecs.avro import MAGIC
from tests.integration.harness import Deployment


def _rendered_email_record() -> dict:  # valid Avro of a type no pack handles
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "message_id": "x", "tenant_id": "lagerhaus-nord", "pack": "storage", "trigger": "booking.created",
        "entity_id": "BK-1", "locale": "de", "from_address": "a@lagerhaus-nord.example", "to_address": "b@example.org",
        "subject": "s", "html": "h", "text": "t", "source_event_id": "e", "source_topic": "t",
        "source_timestamp": now, "created_at": now,
    }


def test_bad_records_are_dead_lettered_with_a_reason_and_valid_ones_still_delivered(deployment: Deployment) -> None:
    deployment.start_worker()
    pub = deployment.publisher
    topic = deployment.topics.for_event(BOOKING_CREATED)

    valid_bytes = pub.encode(BOOKING_CREATED, booking_created("lagerhaus-nord", 1, email=deployment.email("ok")))
    hostile = booking_created("lagerhaus-nord", 2, email=deployment.email("hostile"))
    hostile["customer"]["name"] = "Eve\r\nBcc: victim@example.com"
    empty_id = booking_created("lagerhaus-nord", 3, email=deployment.email("x3"))
    empty_id["booking_id"] = ""
    bad = {
        "not_avro": b"this is not avro at all",
        "empty": b"",
        "unknown_schema": MAGIC + os.urandom(8) + b"\x02ab",
        "corrupt_body": valid_bytes[: len(valid_bytes) // 2],
        "unknown_event_type": pub.encode("tidings.outbound.RenderedEmail", _rendered_email_record()),
        "missing_field": pub.encode(BOOKING_CREATED, empty_id),
        "unknown_tenant": pub.encode(BOOKING_CREATED, booking_created("no-such-tenant", 4, email=deployment.email("x4"))),
        "invalid_recipient": pub.encode(BOOKING_CREATED, booking_created("lagerhaus-nord", 5, email="not-an-address")),
    }
    valid = [booking_created("boxit-london", 10 + i, email=deployment.email(f"v{i}")) for i in range(len(bad) - 1)]
    valid.insert(3, hostile)
    pub.publish_raw(topic, valid_bytes, key="ok")
    for (reason, value), event in zip(bad.items(), valid, strict=True):
        pub.publish_raw(topic, value, key=f"bad-{reason}")
        pub.publish(topic, BOOKING_CREATED, event, key=event["booking_id"])
    pub.flush()

    dead = deployment.read_topic(deployment.topics.dead_letter, len(bad))
    by_key = {m.key().decode(): m for m in dead}
    assert set(by_key) == {f"bad-{reason}" for reason in bad}
    for reason, value in bad.items():
        record = by_key[f"bad-{reason}"]
        headers = {k: v.decode() for k, v in record.headers()}
        assert headers["tidings.reason"] == reason, headers
        assert headers["tidings.source.topic"] == topic
        assert headers["tidings.detail"]
        assert (record.value() or b"") == value  # the original bytes, unchanged: nothing is lost

    # Every valid event still became exactly one mail, the hostile name included, on one line.
    mails = deployment.wait_for_mails(len(valid) + 1)
    recipients = sorted(m.destinations[0] for m in mails)
    assert recipients == sorted([deployment.email("ok"), *(e["customer"]["email"] for e in valid)])
    hostile_mail = next(m for m in mails if m.destinations[0] == deployment.email("hostile"))
    assert hostile_mail.header("Bcc") is None
    assert "\n" not in hostile_mail.to and "Eve Bcc: victim@example.com" in hostile_mail.to

    metrics = urllib.request.urlopen(deployment.workers[0].metrics_url, timeout=5).read().decode()
    for reason in bad:
        stage = "render" if reason == "invalid_recipient" else "ingest"
        assert f'tidings_dead_letters_total{{reason="{reason}",stage="{stage}"}} 1.0' in metrics
