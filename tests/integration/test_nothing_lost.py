"""Each way a record used to be acknowledged with nothing to show for it, now with an outcome.

The guard (``streams/runtime/guard.py``) gives every record one of three outcomes; these tests
drive the causes seen in production-like runs through the real broker, worker and SES emulator:
a mail larger than the broker takes, producers compressing with every Kafka codec, and a tenant
whose "x days" overflow the calendar at the tick while another tenant's reminder is due.
"""

from __future__ import annotations

import datetime as dt
import json

from confluent_kafka import Producer

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.samples import new_envelope
from streams.domain.tenants import TenantDirectory
from streams.settings import REPO_ROOT
from tests.integration.harness import EXAMPLE_TENANTS, Deployment

UTC = dt.timezone.utc


def _statuses(dep: Deployment) -> dict[str, list[str]]:
    codec = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))
    out: dict[str, list[str]] = {}
    with dep.reader(dep.topics.delivery_status) as consumer:
        for msg in consumer.consume(num_messages=10_000, timeout=3):
            if msg.error() is None:
                record = codec.decode(msg.value()).record
                out.setdefault(record["message_id"], []).append(record["status"])
    return out


def test_a_mail_larger_than_the_broker_takes_is_dead_lettered_and_the_stream_goes_on(deployment: Deployment) -> None:
    dep = deployment
    # A deployment that allows mails this large (the render budgets' defaults would stop this
    # one first, as render_failed): the broker's limit is what is tested here.
    dep.env.update(TIDINGS_RENDER_MAX_HTML_CHARS="2000000", TIDINGS_RENDER_MAX_TEXT_CHARS="2000000",
                   TIDINGS_RENDER_MAX_CPU_SECONDS="5")
    dep.start_worker(TIDINGS_QUEUED_STATUS="on")  # so that a half-written mail would show as a QUEUED status
    topic = dep.topics.for_event(BOOKING_CREATED)
    huge = booking_created("lagerhaus-nord", 1, email=dep.email("huge"), booking_id="BK-HUGE")
    huge["unit_name"] = "U" * 600_000  # a 600 KB event, under the broker's 1 MB; its mail is over it
    small = booking_created("lagerhaus-nord", 2, email=dep.email("small"), booking_id="BK-SMALL")
    dep.publisher.publish(topic, BOOKING_CREATED, huge, key="BK-HUGE")
    dep.publisher.publish(topic, BOOKING_CREATED, small, key="BK-SMALL")
    dep.publisher.flush()

    (dead,) = dep.read_topic(dep.topics.dead_letter, 1)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert headers["tidings.reason"] == "message_too_large", headers
    assert headers["tidings.stage"] == "render"
    assert "bytes" in headers["tidings.detail"] and headers["tidings.message_id"]
    assert dead.key() == b"BK-HUGE" and len(dead.value()) > 600_000  # the event itself, re-drivable

    mails = dep.wait_for_mails(1)
    assert [m.destinations[0] for m in mails] == [dep.email("small")]
    statuses = _statuses(dep)
    assert headers["tidings.message_id"] not in statuses  # never queued: nothing half-written
    assert dep.wait_metric("tidings_record_outcomes_total", 1, stage="ingest", outcome="committed") == 1
    assert dep.wait_metric("tidings_record_outcomes_total", 1, stage="ingest", outcome="dead_lettered") == 1


def test_batches_of_every_compression_codec_are_mailed(deployment: Deployment) -> None:
    dep = deployment
    dep.start_worker()
    topic = dep.topics.for_event(BOOKING_CREATED)
    codecs = ("gzip", "snappy", "lz4", "zstd")
    for i, codec in enumerate(codecs):
        producer = Producer({"bootstrap.servers": dep.bootstrap, "compression.type": codec, "linger.ms": 50})
        for j in range(3):  # a batch of several records, compressed together
            n = 10 * i + j
            event = booking_created("boxit-london", n, email=dep.email(f"{codec}{j}"), booking_id=f"BK-{codec}-{j}")
            producer.produce(topic, key=f"BK-{codec}-{j}", value=dep.publisher.encode(BOOKING_CREATED, event))
        assert producer.flush(30) == 0
    mails = dep.wait_for_mails(3 * len(codecs))
    assert sorted(m.destinations[0] for m in mails) == sorted(dep.email(f"{c}{j}") for c in codecs for j in range(3))


def _write_tenant(dep: Deployment, record: dict) -> None:
    """A tenant record straight onto the tenants topic, as a second team's tool might: no CLI check."""
    producer = Producer({"bootstrap.servers": dep.bootstrap})
    producer.produce(dep.topics.tenants, key=record["tenant_id"].encode(), value=json.dumps(record).encode())
    assert producer.flush(30) == 0


def test_a_tenant_whose_days_overflow_at_the_tick_does_not_cost_another_tenant_its_reminder(deployment: Deployment) -> None:
    dep = deployment
    base = TenantDirectory.load(EXAMPLE_TENANTS).get("lagerhaus-nord")
    assert base is not None
    absurd = {**base.model_dump(mode="json"), "tenant_id": "absurd-nord", "templates": {}}
    _write_tenant(dep, absurd)  # valid for now: the same 3 days before the move-in
    worker = dep.start_worker()
    worker.wait_serving()
    t0 = dt.datetime(2027, 3, 1, 8, tzinfo=UTC)
    move_in = dt.date(2027, 3, 20)
    for tenant in ("lagerhaus-nord", "absurd-nord"):
        # The same key: the same partition, so both reminders are due in one tick of one partition.
        record = booking_created(tenant, 7, email=dep.email(tenant), booking_id="BK-SHARED")
        record.update(envelope=new_envelope(tenant, now=t0, producer="test"), move_in_date=move_in, move_out_date=None)
        dep.publisher.publish(dep.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, record, key="BK-SHARED")
    dep.publisher.flush()
    dep.wait_metric("tidings_entity_updates_total", 2)
    dep.wait_for_mails(2)  # both booking confirmations

    applied = dep.metric(worker, "tidings_tenant_updates_total")
    triggers = dict(absurd["triggers"])
    triggers["storage/booking.before_move_in"] = {"enabled": True, "params": {"days": 10_000_000}}
    _write_tenant(dep, {**absurd, "triggers": triggers})
    dep.wait_metric("tidings_tenant_updates_total", applied + 1)  # applied or rejected: read either way

    # Both reminders were planned for 03-17 09:00 Berlin; tick past it, one tick per partition.
    dep.tick(dt.datetime(2027, 3, 17, 9, 30, tzinfo=UTC))
    dep.wait_metric("tidings_ticks_total", dep.settings.partitions)
    def reminded() -> list | None:
        return [
            m for m in dep.my_mails()
            if m.header("X-Tidings-Trigger") == "storage/booking.before_move_in" and m.destinations[0] == dep.email("lagerhaus-nord")
        ] or None

    assert len(dep.wait_for("lagerhaus-nord's move-in reminder", reminded)) == 1
    assert worker.running
