"""Suppression on the real broker and the SES emulator: feedback in, no mail out.

One worker per test. Each feedback record is followed by a wait for the worker to have *applied*
it (its ``tidings_suppression_entries`` gauge, or the ignored-feedback counter): feedback and
domain events travel on different topics, which Kafka does not order against each other. "No mail"
is then checked on the worker's own counter of suppressed mails, which moves exactly when the
sender decides not to send, and on the emulator, which must not hold the mail.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any

from confluent_kafka import Producer

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.domain.samples import new_envelope
from streams.suppression import cli
from streams.suppression.feedback import UNSUBSCRIBE_EVENT
from tests.integration.harness import Deployment
from tests.integration.test_timed_triggers import Timeline, _customer

TENANT = "lagerhaus-nord"  # booking.created (transactional) and booking.after_created (not) are on
UTC = dt.timezone.utc


def _ses_event(event_type: str, tenant: str | None, **body: Any) -> bytes:
    tags = {"ses:configuration-set": ["tidings"], "trigger": ["storage-booking_created"]}
    if tenant is not None:
        tags["tenant"] = [tenant]
    mail = {"timestamp": "2026-11-23T09:00:00.000Z", "messageId": "0100-test", "source": "buchung@lagerhaus-nord.example",
            "destination": ["someone@example.org"], "tags": tags}
    return json.dumps({"eventType": event_type, "mail": mail, **body}).encode()


def _bounce(address: str, bounce_type: str = "Permanent", tenant: str | None = TENANT) -> bytes:
    return _ses_event("Bounce", tenant, bounce={
        "bounceType": bounce_type, "bounceSubType": "General", "timestamp": "2026-11-23T09:00:05.000Z",
        "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1"}],
    })


def _complaint(address: str) -> bytes:
    return _ses_event("Complaint", TENANT, complaint={
        "complainedRecipients": [{"emailAddress": address}], "complaintFeedbackType": "abuse",
        "timestamp": "2026-11-23T10:00:00.000Z",
    })


def _publish_ses(dep: Deployment, *values: bytes) -> None:
    producer = Producer({"bootstrap.servers": dep.bootstrap})
    for n, value in enumerate(values):
        producer.produce(dep.topics.ses_events, key=f"ses-{n}".encode(), value=value)
    assert producer.flush(30) == 0


def _book(dep: Deployment, n: int, address: str) -> None:
    event = booking_created(TENANT, n, email=address, locale="de")
    dep.publisher.publish(dep.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event, key=event["booking_id"])
    dep.publisher.flush()


def test_bounces_and_complaints_stop_every_mail_to_the_address_and_nothing_else(deployment: Deployment) -> None:
    dep = deployment
    worker = dep.start_worker()
    worker.wait_serving()
    bounced, complained, transient, fine = (dep.email(x) for x in ("bounced", "complained", "transient", "fine"))

    garbage = {
        "not_json": b"\x00 this is not an SES event",
        "not_ses_event": b'{"hello": "world"}',
        "missing_field": _bounce(dep.email("untagged"), tenant=None),
        "unknown_tenant": _bounce(dep.email("stranger"), tenant="no-such-tenant"),
    }
    _publish_ses(dep, *garbage.values())
    # SES writes the address with a capital domain at times; the list holds it normalised.
    _publish_ses(dep, _bounce(bounced.replace("example.org", "Example.ORG")), _complaint(complained))
    dep.wait_metric("tidings_suppression_entries", 2)
    _publish_ses(dep, _bounce(transient, "Transient"), _ses_event("Delivery", TENANT, delivery={}))
    dep.wait_metric("tidings_feedback_events_total", 2, outcome="ignored")
    # What SES's bounce and complaint rates count, per tenant (the transient bounce is not one).
    assert dep.metric(worker, "tidings_ses_feedback_total", tenant=TENANT, event_type="Bounce") == 1
    assert dep.metric(worker, "tidings_ses_feedback_total", tenant=TENANT, event_type="Complaint") == 1

    for n, address in enumerate((bounced, complained, transient, fine)):
        _book(dep, n, address)
    dep.wait_metric("tidings_mails_suppressed_total", 1, tenant=TENANT, reason="bounce")
    dep.wait_metric("tidings_mails_suppressed_total", 1, tenant=TENANT, reason="complaint")
    mails = dep.wait_for_mails(2)
    assert dep.wait_metric("tidings_emails_sent_total", 2) == 2
    assert sorted(m.destinations[0] for m in dep.my_mails()) == sorted([transient, fine])
    assert dep.metric(worker, "tidings_mails_suppressed_total") == 2
    assert {m.header("X-Tidings-Trigger") for m in mails} == {"storage/booking.created"}

    # Garbage: dead-lettered with its reason and its bytes, on the input's topic.
    dead = dep.read_topic(dep.topics.dead_letter, len(garbage))
    by_reason = {dict(r.headers())["tidings.reason"].decode(): r for r in dead}
    assert set(by_reason) == set(garbage)
    for reason, value in garbage.items():
        headers = {k: v.decode() for k, v in by_reason[reason].headers()}
        assert by_reason[reason].value() == value
        assert headers["tidings.source.topic"] == dep.topics.ses_events and headers["tidings.stage"] == "feedback"
        assert "@" not in headers["tidings.detail"]
    assert dep.metric(worker, "tidings_suppression_records_total", outcome="applied", reason="bounce") == 1
    assert dep.metric(worker, "tidings_suppression_entries") == 2


def test_operators_add_list_and_lift_suppressions_with_the_cli(deployment: Deployment, capsys) -> None:  # type: ignore[no-untyped-def]
    dep = deployment
    worker = dep.start_worker()
    worker.wait_serving()
    address = dep.email("manual")
    shouted = address.replace("@example.org", "@Example.ORG")  # the same mailbox: domains are case-insensitive
    assert cli.main(["add", TENANT, "not an address", "--reason", "manual"], settings=dep.settings) == 1
    assert cli.main(["add", "no-such-tenant", address, "--reason", "manual"], settings=dep.settings) == 1
    assert cli.main(["remove", TENANT, address], settings=dep.settings) == 1  # nothing to lift
    assert cli.main(["add", TENANT, shouted, "--reason", "manual"], settings=dep.settings) == 0
    dep.wait_metric("tidings_suppression_entries", 1)
    capsys.readouterr()
    assert cli.main(["list", "--tenant", TENANT], settings=dep.settings) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split("\t")[:4] == [TENANT, address, "manual", "all"]

    _book(dep, 1, address)
    dep.wait_metric("tidings_mails_suppressed_total", 1, tenant=TENANT, reason="manual")
    assert cli.main(["remove", TENANT, shouted], settings=dep.settings) == 0
    dep.wait_metric("tidings_suppression_records_total", 1, outcome="removed")
    assert dep.metric(worker, "tidings_suppression_entries") == 0
    _book(dep, 2, address)
    (mail,) = dep.wait_for_mails(1)
    assert mail.header("X-Tidings-Trigger") == "storage/booking.created"
    assert dep.metric(worker, "tidings_mails_suppressed_total") == 1


def test_unsubscribes_stop_only_non_transactional_mail_and_the_one_click_endpoint_works(deployment: Deployment) -> None:
    dep = deployment
    line = Timeline(dep, TENANT)
    worker = line.worker
    six_hours = dt.timedelta(hours=6)
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    early, late = _customer(dep, "early"), _customer(dep, "late")

    # The tenant's own service reports an unsubscribe (Avro on <prefix>unsubscribes).
    unsubscribed = {"envelope": new_envelope(TENANT, now=t0, producer="preference-centre"),
                    "email": early["email"], "source": "preference_centre"}
    dep.publisher.publish(dep.topics.unsubscribes, UNSUBSCRIBE_EVENT, unsubscribed, key=early["email"])
    # Garbage on the same topic: dead-lettered with its reason, the stream goes on.
    wrong_type = dep.publisher.encode(BOOKING_CREATED, booking_created(TENANT, 9, email=dep.email("x")))
    dep.publisher.publish_raw(dep.topics.unsubscribes, b"not avro at all", key="bad-1")
    dep.publisher.publish_raw(dep.topics.unsubscribes, wrong_type, key="bad-2")
    dep.publisher.flush()
    dep.wait_metric("tidings_suppression_entries", 1)
    dead = dep.read_topic(dep.topics.dead_letter, 2)
    assert sorted(dict(r.headers())["tidings.reason"] for r in dead) == [b"not_avro", b"unknown_event_type"]

    def booking(at: dt.datetime, key: str, customer: dict[str, Any]) -> None:
        line.event(BOOKING_CREATED, at, key, booking_id=key, customer=customer, unit_name="A-1",
                   site_name="Hamburg Hafencity", site_address="Speicherstraße 12", move_in_date=dt.date(2027, 6, 1),
                   move_out_date=None, monthly_price=None)

    booking(t0, "BK-EARLY", early)
    booking(t0, "BK-LATE-1", late)
    line.run(t0, t0 + dt.timedelta(days=3), six_hours)  # after_created: two days after the booking
    dep.wait_metric("tidings_mails_suppressed_total", 1, tenant=TENANT, reason="unsubscribe")
    mails = dep.wait_for_mails(3)  # booking.created to both, after_created only to "late"
    sent = sorted((m.destinations[0], m.header("X-Tidings-Trigger")) for m in mails)
    assert sent == sorted([(early["email"], "storage/booking.created"), (late["email"], "storage/booking.created"),
                           (late["email"], "storage/booking.after_created")])
    reminder = next(m for m in mails if m.header("X-Tidings-Trigger") == "storage/booking.after_created")
    created = next(m for m in mails if m.destinations[0] == late["email"] and m is not reminder)
    assert created.header("List-Unsubscribe") is None  # transactional: no opt-out
    assert reminder.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    link = reminder.header("List-Unsubscribe").split(",")[0].strip().strip("<>")  # type: ignore[union-attr]
    assert link.startswith("https://mail.lagerhaus-nord.example/unsubscribe/") and "late" not in link
    endpoint = f"http://127.0.0.1:{worker.web_port}/unsubscribe/{link.rsplit('/', 1)[1]}"

    # Prefetching the link (GET) and a forged token change nothing; the one-click POST does.
    assert _http(endpoint, "GET")[0] == 200
    assert _http(endpoint[:-6] + "AAAAAA", "POST")[0] == 400
    assert _http(f"http://127.0.0.1:{worker.web_port}/unsubscribe/garbage", "POST")[0] == 400
    assert dep.metric(worker, "tidings_suppression_entries") == 1
    status, body = _http(endpoint, "POST", b"List-Unsubscribe=One-Click")
    assert status == 200 and "unsubscribed" in body
    dep.wait_metric("tidings_suppression_entries", 2)

    t1 = dt.datetime(2027, 1, 10, 8, tzinfo=UTC)
    booking(t1, "BK-LATE-2", late)
    line.run(t1, t1 + dt.timedelta(days=3), six_hours)
    dep.wait_metric("tidings_mails_suppressed_total", 2, tenant=TENANT, reason="unsubscribe")
    dep.wait_for_mails(4)  # the second booking's confirmation still goes out
    assert dep.metric(worker, "tidings_timers_fired_total") == 3
    assert dep.wait_metric("tidings_emails_sent_total", 4) == 4
    assert len(dep.my_mails()) == 4
    assert dep.metric(worker, "tidings_mails_suppressed_total") == 2


def _http(url: str, method: str, body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


