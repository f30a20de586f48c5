"""tidings-replay on the real broker and the SES emulator, against a worker that really sent.

A worker processes a day of mixed events (every pack, a duplicate, a suppressed recipient, a bad
record) and sends them; then ``tidings-replay`` (the console script's module, in a subprocess, as a
user runs it) reads the same range. The dry run must list exactly the mails the emulator received,
by message id; the shadow run must find no difference, and with one template changed exactly that
template's mails changed; a simulation over a month of bookings and invoices must put the
reminders and dunning on the days the timed-trigger tests expect. Around every run the
deployment's topics (every partition's offsets), its consumer group's committed offsets and the
emulator's mails are snapshotted and must be equal: the replay wrote nothing.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from deploy.local.ses_emulator import sent_mails
from streams.domain.samples import new_envelope, sample_event
from streams.settings import REPO_ROOT
from streams.suppression.feed import SuppressionWriter
from streams.suppression.model import Suppression
from tests.integration.harness import Deployment

UTC = dt.timezone.utc
STORAGE = "lagerhaus-nord"  # Europe/Berlin, 09:00; every storage timed trigger on
REPLAY_SECONDS = 120


def _watermarks(dep: Deployment, consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """Asked again while a just-created partition has no leader yet (NOT_LEADER_FOR_PARTITION)."""
    def probe() -> tuple[int, int] | None:
        try:
            return consumer.get_watermark_offsets(tp, timeout=10)  # type: ignore[no-any-return]
        except KafkaException as e:
            if not e.args[0].retriable() and e.args[0].code() not in (
                    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE):
                raise
            return None

    return dep.wait_for(f"the offsets of {tp.topic}[{tp.partition}]", probe, timeout=30)


def _snapshot(dep: Deployment) -> dict[str, Any]:
    """Every offset of the run's topics, its groups' committed offsets, the emulator's mail count."""
    admin = AdminClient({"bootstrap.servers": dep.bootstrap})
    consumer = Consumer({"bootstrap.servers": dep.bootstrap, "group.id": f"snapshot-{dep.run}", "enable.auto.commit": False})
    try:
        topics = {name: meta for name, meta in admin.list_topics(timeout=10).topics.items() if dep.run in name}
        marks = {(t, p): _watermarks(dep, consumer, TopicPartition(t, p)) for t, meta in topics.items() for p in meta.partitions}
    finally:
        consumer.close()
    groups = sorted(g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid)
    committed = {}
    for group in (g for g in groups if dep.run in g):
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=10)
        committed[group] = sorted((tp.topic, tp.partition, tp.offset) for tp in result.topic_partitions)
    return {
        "topics": marks,
        "groups": committed,
        "replay_groups": [g for g in groups if g.startswith("tidings-replay")],
        "ses": len(sent_mails(dep.ses_endpoint)),
    }


def _replay(dep: Deployment, tmp: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    """Run ``python -m streams.replay`` with the deployment's settings; its JSON lines and its summary."""
    out = tmp / f"replay-{len(list(tmp.glob('replay-*')))}.jsonl"
    env = {**os.environ, **dep.env}
    done = subprocess.run([sys.executable, "-m", "streams.replay", "--out", str(out), *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=REPLAY_SECONDS)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()], done.stderr


def _untouched(dep: Deployment, tmp: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    before = _snapshot(dep)
    result = _replay(dep, tmp, *args)
    after = _snapshot(dep)
    assert after == before, "the replay changed the deployment"
    assert before["replay_groups"] == []  # it never joined (or created) a consumer group
    return result


def _mixed_day(dep: Deployment) -> dict[str, Any]:
    """Every sample event of every example tenant's packs, one twice, one to a suppressed address,
    one undecodable record; returns what was published."""
    catalog = dep.topics.catalog
    tenants = {"lagerhaus-nord": "storage", "boxit-london": "storage", "voltpark-nl": "charging",
               "stromnetz-sued": "charging", "beraterfinder": "advisors", "device-tracker-plus": "tracker"}
    now = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    counter = iter(range(10_000))
    published: dict[str, Any] = {"records": 0, "suppressed": dep.email("suppressed")}

    def unique(path: str, person: dict[str, Any]) -> dict[str, Any]:
        return {**person, "email": dep.email(next(counter))}

    for tenant, pack in tenants.items():
        for type_name in sorted(catalog.samples):
            topic = dep.topics.for_event(type_name)
            if not catalog.handles(type_name) or topic.split(".")[-2] != pack:
                continue
            if topic.endswith(".charging.customers"):
                # Customer statuses: the worker follows them on a feed of their own, racing the events
                # of the same customer; a replay applies them as they are when it starts (today's).
                continue
            event = sample_event(catalog.samples, type_name, tenant, now=now, recipient=unique)
            dep.publisher.publish(dep.topics.for_event(type_name), type_name, event, key=f"{tenant}-{type_name}")
            published["records"] += 1
    booking = sample_event(catalog.samples, "tidings.storage.BookingCreated", "boxit-london", now=now, recipient=unique)
    topic = dep.topics.for_event("tidings.storage.BookingCreated")
    dep.publisher.publish(topic, "tidings.storage.BookingCreated", booking, key="twice")
    dep.publisher.publish(topic, "tidings.storage.BookingCreated", booking, key="twice")  # a redelivery
    bounced = sample_event(catalog.samples, "tidings.storage.BookingCreated", "boxit-london", now=now,
                           recipient=lambda path, person: {**person, "email": published["suppressed"]})
    dep.publisher.publish(topic, "tidings.storage.BookingCreated", bounced, key="bounced")
    dep.publisher.publish_raw(topic, b"not an event", key="garbage")
    dep.publisher.flush()
    published["records"] += 4
    published["twice"] = booking["envelope"]["event_id"]
    return published


def _sent_day(dep: Deployment) -> tuple[dict[str, Any], dict[str, str]]:
    """A worker sends the mixed day; returns what was published and the message ids SES received,
    each with its trigger."""
    writer = SuppressionWriter(dep.bootstrap, dep.topics.suppressions)
    writer.suppress([Suppression("boxit-london", dep.email("suppressed"), "bounce", "all", dt.datetime.now(UTC))])
    writer.close()
    worker = dep.start_worker()
    worker.wait_serving()
    published = _mixed_day(dep)
    dep.wait_metric("tidings_events_consumed_total", published["records"])
    queued = dep.wait_metric("tidings_emails_rendered_total", 1)
    history = dep.wait_settled(int(queued) - 1)  # the redelivered booking rendered its id twice
    sent = {mid for mid, records in history.items() if records[-1]["status"] == "SENT"}
    mails = dep.wait_for_mails(len(sent))
    worker.stop()  # its last commit done: from here on nothing of the deployment may move
    received = {m.message_id.strip("<>").split("@")[0]: str(m.header("X-Tidings-Trigger")) for m in mails}
    assert set(received) == sent
    return published, received


def test_a_dry_run_lists_exactly_the_mails_the_worker_sent(deployment: Deployment, tmp_path: Path) -> None:
    published, received = _sent_day(deployment)
    lines, summary = _untouched(deployment, tmp_path, "--html", str(tmp_path / "gallery"))

    by_why = collections.defaultdict(list)
    for line in lines:
        by_why[line["why"]].append(line)
    fired = {line["message_id"] for line in by_why["fired"]}
    assert fired == set(received), (
        [line for line in lines if line.get("message_id") in fired ^ set(received)],
        {mid: trigger for mid, trigger in received.items() if mid not in fired},
    )
    assert len(by_why["fired"]) == len(received)  # each once
    # The redelivered booking: its second copy is a duplicate of a mail that fired.
    fired_ids = {line["message_id"] for line in by_why["fired"]}
    assert len(by_why["duplicate"]) == 1 and by_why["duplicate"][0]["message_id"] in fired_ids
    # The bounced address: suppressed, as the sender decided.
    assert [(line["tenant"], line["reason"]) for line in by_why["suppressed"]] == [("boxit-london", "bounce")]
    assert [line["reason"].split(":")[0] for line in by_why["dead-lettered"]] == ["not_avro"]
    assert all("@" in line["recipient"] and deployment.run not in line["recipient"] for line in by_why["fired"])  # masked
    assert "total" in summary and (tmp_path / "gallery" / "index.html").exists()
    rendered = {line["message_id"] for line in lines if line["why"] in ("fired", "duplicate", "suppressed")}
    assert len(list((tmp_path / "gallery" / "mails").rglob("*.html"))) == len(rendered)

    # Two processes over disjoint partitions (each with its own read-only consumer): the same lines
    # (but for ``at``, the time each run started), the duplicate still found on its partition.
    split, summary = _untouched(deployment, tmp_path, "--processes", "2")
    assert "in 2 processes" in summary

    def without_at(ls: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps({k: v for k, v in line.items() if k != "at"}, sort_keys=True) for line in ls)

    assert without_at(split) == without_at(lines)


def test_shadow_finds_no_difference_and_then_exactly_the_changed_template(deployment: Deployment, tmp_path: Path) -> None:
    _, received = _sent_day(deployment)

    same, summary = _untouched(deployment, tmp_path, "--shadow")
    assert same == [], summary
    assert "no difference" in summary

    templates = tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "templates", templates)
    for body in (templates / "storage" / "booking.created").glob("*/body.txt"):
        body.write_text(body.read_text().replace("{% endblock %}", "P.S. Our opening hours changed.\n{% endblock %}"))
    changed, summary = _untouched(deployment, tmp_path, "--shadow", "--templates", str(templates))
    assert changed, summary
    assert {d["shadow"] for d in changed} == {"changed"}, summary
    assert {d["trigger"] for d in changed} == {"storage/booking.created"}
    dry, _ = _replay(deployment, tmp_path)
    bookings = {line["message_id"] for line in dry if line.get("trigger") == "storage/booking.created" and line["why"] != "disabled"}
    assert {d["message_id"] for d in changed} == bookings  # every mail of that template, and no other
    assert all("+P.S. Our opening hours changed." in d["diff"] for d in changed)


def _produce_at(dep: Deployment, producer: Producer, type_name: str, record: dict[str, Any], key: str, at: dt.datetime) -> None:
    """Publish with the event's time as the Kafka timestamp: the simulation's clock follows it.

    Kafka 4 brokers refuse timestamps more than an hour ahead, so a story's events lie in the past.
    """
    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err

    producer.produce(dep.topics.for_event(type_name), key=key.encode(), value=dep.publisher.encode(type_name, record),
                     timestamp=int(at.timestamp() * 1000), on_delivery=delivered)


def test_a_simulated_month_of_bookings_and_invoices(deployment: Deployment, tmp_path: Path) -> None:
    dep = deployment
    d0 = dt.datetime.combine(dt.date.today() - dt.timedelta(days=5), dt.time(8), UTC)  # within the broker's retention (a week)
    day = dt.timedelta(days=1)
    customer = {"id": "CU-1", "email": dep.email("sim"), "name": "Jana Müller", "locale": "de", "time_zone": None}
    producer = Producer({"bootstrap.servers": dep.bootstrap})
    move_in, move_out = (d0 + 10 * day).date(), (d0 + 30 * day).date()
    _produce_at(dep, producer, "tidings.storage.BookingCreated", {
        "envelope": new_envelope(STORAGE, now=d0, producer="test"), "booking_id": "BK-SIM", "customer": customer,
        "unit_name": "B-104", "site_name": "Hamburg Hafencity", "site_address": "Speicherstraße 12",
        "move_in_date": move_in, "move_out_date": move_out, "monthly_price": None}, "BK-SIM", d0)
    due = (d0 + day).date()
    for invoice in ("INV-OPEN", "INV-PAID"):
        _produce_at(dep, producer, "tidings.storage.InvoiceIssued", {
            "envelope": new_envelope(STORAGE, now=d0, producer="test"), "invoice_id": invoice, "booking_id": "BK-SIM",
            "customer": customer, "invoice_number": invoice, "amount": {"amount_minor": 8900, "currency": "EUR"},
            "due_date": due, "pay_url": "https://pay.example/inv"}, invoice, d0)
    paid = d0 + 4 * day + dt.timedelta(hours=10)  # after the first dunning step (due + 3), before the second (+ 10)
    _produce_at(dep, producer, "tidings.storage.InvoicePaid", {
        "envelope": new_envelope(STORAGE, now=paid, producer="test"), "invoice_id": "INV-PAID", "paid_at": paid}, "INV-PAID", paid)
    assert producer.flush(30) == 0

    lines, summary = _untouched(dep, tmp_path, "--simulate", "--until", (d0 + 35 * day).isoformat(), "--step", "1h")
    got = collections.Counter((line["at"][:10], line["trigger"]) for line in lines if line["why"] == "fired")
    on = lambda n: (d0 + n * day).date().isoformat()  # noqa: E731
    assert got == collections.Counter({
        (on(0), "storage/booking.created"): 1,
        (on(2), "storage/booking.after_created"): 1,
        (on(1), "storage/invoice.due_reached"): 2,
        (on(4), "storage/invoice.after_due"): 2,  # step 1 of both: the payment comes the same evening
        (on(7), "storage/booking.before_move_in"): 1,
        (on(10), "storage/booking.move_in_reached"): 1,
        (on(11), "storage/invoice.after_due"): 1,  # step 2: only the open invoice
        (on(16), "storage/booking.before_move_out"): 1,  # the tenant's 14 days before move-out
        (on(17), "storage/booking.after_move_in"): 1,
        (on(21), "storage/invoice.after_due"): 1,  # step 3
        (on(30), "storage/booking.move_out_reached"): 1,
    }), summary
    assert "mails per day and trigger" in summary
