"""Timed triggers on the real broker, with time moved by ticks: months in seconds.

The workers run with ``TIDINGS_TICK_SOURCE=external``; the test publishes ticks (what
``tidings-tick`` does). Events and ticks travel on different topics, which Kafka does not order
against each other, so after each event that changes a plan the test waits for the worker's
``tidings_entity_updates_total`` before it moves time on, and after a run of ticks for
``tidings_ticks_total``. "None extra" is checked on the worker's own counters: once every tick
is processed, the timers fired and the mails sent must equal the expected counts exactly.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterator
from typing import Any

from streams.domain.samples import new_envelope
from tests.integration.harness import Deployment

UTC = dt.timezone.utc
STORAGE = "lagerhaus-nord"  # Europe/Berlin, 09:00; every storage timed trigger on
ADVISORS = "beraterfinder"
CHARGING = "voltpark-nl"


class Timeline:
    """One worker, the events of a story, and the clock moved in steps."""

    def __init__(self, deployment: Deployment, tenant: str) -> None:
        self.dep = deployment
        self.tenant = tenant
        self.worker = deployment.start_worker()
        self.worker.wait_serving()
        self.updates = 0
        self.ticks = 0

    def event(self, type_name: str, at: dt.datetime, key: str, **fields: Any) -> None:
        record = {"envelope": new_envelope(self.tenant, now=at, producer="test"), **fields}
        self.dep.publisher.publish(self.dep.topics.for_event(type_name), type_name, record, key=key)
        self.dep.publisher.flush()
        self.updates += 1
        self.dep.wait_metric("tidings_entity_updates_total", self.updates)

    def run(self, start: dt.datetime, until: dt.datetime, every: dt.timedelta) -> None:
        instants = list(_range(start, until, every))
        self.dep.tick(*instants)
        self.ticks += len(instants) * self.dep.settings.partitions
        self.dep.wait_metric("tidings_ticks_total", self.ticks)

    def settle(self, fired: int, sent: int) -> list[Any]:
        """Wait for ``sent`` mails; then the counters must say exactly ``fired`` timers and ``sent`` mails."""
        mails = self.dep.wait_for_mails(sent)
        assert self.dep.metric(self.worker, "tidings_timers_fired_total") == fired
        assert self.dep.wait_metric("tidings_emails_sent_total", sent) == sent
        assert len(self.dep.my_mails()) == sent
        return mails


SIX_HOURS = dt.timedelta(hours=6)

def _range(start: dt.datetime, until: dt.datetime, every: dt.timedelta) -> Iterator[dt.datetime]:
    now = start
    while now <= until:
        yield now
        now += every


def _triggers(mails: list[Any]) -> list[str]:
    return [m.header("X-Tidings-Trigger") for m in mails]


def _customer(dep: Deployment, n: str, locale: str = "de", **extra: Any) -> dict[str, Any]:
    return {"id": f"CU-{n}", "email": dep.email(n), "name": "Jana Müller", "locale": locale, "time_zone": None, **extra}


def test_a_booking_life_follows_its_dates_and_ends_with_the_cancellation(deployment: Deployment) -> None:
    line = Timeline(deployment, STORAGE)
    customer = _customer(deployment, "life")
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    line.event("tidings.storage.BookingCreated", t0, "BK-LIFE", booking_id="BK-LIFE", customer=customer,
               unit_name="B-104, 6 m²", site_name="Hamburg Hafencity", site_address="Speicherstraße 12, 20457 Hamburg",
               move_in_date=dt.date(2027, 1, 20), move_out_date=dt.date(2027, 6, 30), monthly_price=None)
    line.run(t0, dt.datetime(2027, 1, 10, 8, tzinfo=UTC), SIX_HOURS)
    line.event("tidings.storage.BookingDatesChanged", dt.datetime(2027, 1, 10, 9, tzinfo=UTC), "BK-LIFE",
               booking_id="BK-LIFE", customer=customer, move_in_date=dt.date(2027, 1, 25), move_out_date=dt.date(2027, 6, 30))
    line.run(dt.datetime(2027, 1, 10, 14, tzinfo=UTC), dt.datetime(2027, 6, 20, 8, tzinfo=UTC), SIX_HOURS)
    line.event("tidings.storage.BookingCancelled", dt.datetime(2027, 6, 20, 9, tzinfo=UTC), "BK-LIFE",
               booking_id="BK-LIFE", customer=customer, unit_name="B-104, 6 m²", site_name="Hamburg Hafencity",
               site_address="Speicherstraße 12, 20457 Hamburg", cancelled_by="CUSTOMER",
               move_out_date=dt.date(2027, 6, 30), cancellation_fee=None, cancellation_policy_url=None)
    line.run(dt.datetime(2027, 6, 20, 14, tzinfo=UTC), dt.datetime(2027, 7, 31, 8, tzinfo=UTC), SIX_HOURS)

    mails = line.settle(fired=5, sent=7)  # + the two event mails: created, cancelled
    assert collections.Counter(_triggers(mails)) == {
        "storage/booking.created": 1,
        "storage/booking.after_created": 1,
        "storage/booking.before_move_in": 1,
        "storage/booking.move_in_reached": 1,
        "storage/booking.after_move_in": 1,
        "storage/booking.before_move_out": 1,  # the tenant's 14 days before 06-30: 06-16
        "storage/booking.cancelled": 1,
        # no move_out_reached: the booking was cancelled first
    }
    before_move_in = next(m for m in mails if m.header("X-Tidings-Trigger") == "storage/booking.before_move_in")
    assert "25. Januar 2027" in before_move_in.part("plain"), before_move_in.part("plain")  # the moved date, not the first one


def test_dunning_stops_when_the_invoice_is_paid(deployment: Deployment) -> None:
    line = Timeline(deployment, STORAGE)
    customer = _customer(deployment, "dunning")
    line.event("tidings.storage.InvoiceIssued", dt.datetime(2027, 1, 15, tzinfo=UTC), "INV-1", invoice_id="INV-1",
               booking_id="BK-LIFE", customer=customer, invoice_number="2027-0042",
               amount={"amount_minor": 8900, "currency": "EUR"}, due_date=dt.date(2027, 2, 1),
               pay_url="https://pay.example/inv-1")
    day = dt.timedelta(days=1)
    line.run(dt.datetime(2027, 1, 31, 9, tzinfo=UTC), dt.datetime(2027, 2, 12, 9, tzinfo=UTC), day)
    line.event("tidings.storage.InvoicePaid", dt.datetime(2027, 2, 12, 10, tzinfo=UTC), "INV-1", invoice_id="INV-1",
               paid_at=dt.datetime(2027, 2, 12, 10, tzinfo=UTC))
    line.run(dt.datetime(2027, 2, 13, 9, tzinfo=UTC), dt.datetime(2027, 3, 31, 9, tzinfo=UTC), day)
    mails = line.settle(fired=3, sent=3)
    assert sorted(_triggers(mails)) == ["storage/invoice.after_due"] * 2 + ["storage/invoice.due_reached"]
    assert len({m.subject for m in mails}) == 3  # each step worded differently


def test_a_station_outage_mails_once_and_a_flap_not_at_all(deployment: Deployment) -> None:
    line = Timeline(deployment, CHARGING)
    minute = dt.timedelta(minutes=1)
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    station = {"station_id": "ST-1"}
    owner = _customer(deployment, "station", locale="nl")
    line.event("tidings.charging.StationRegistered", t0, "ST-1", **station, customer=owner, station_name="Thuislader",
               station_address=None, station_url="https://voltpark.example/st-1")
    for m in (0, 5, 10):
        line.event("tidings.charging.StationHeartbeat", t0 + m * minute, "ST-1", **station, seen_at=t0 + m * minute)
    line.run(t0, t0 + 24 * minute, minute)  # a flap: 14 silent minutes, shorter than the 15 of the window
    line.event("tidings.charging.StationHeartbeat", t0 + 24 * minute, "ST-1", **station, seen_at=t0 + 24 * minute)
    line.run(t0 + 25 * minute, t0 + 90 * minute, minute)  # an outage from minute 24 on
    line.event("tidings.charging.StationConnectivityLost", t0 + 91 * minute, "ST-1", **station, customer=owner,
               station_name="Thuislader", station_address=None, last_seen_at=t0 + 24 * minute,
               station_url="https://voltpark.example/st-1")  # the gateway reports the same outage
    line.run(t0 + 92 * minute, t0 + 120 * minute, minute)
    mails = line.settle(fired=1, sent=1)
    assert _triggers(mails) == ["charging/evse.connectivity_lost"]


def test_an_unanswered_message_reminds_the_advisor_and_a_read_one_does_not(deployment: Deployment) -> None:
    line = Timeline(deployment, ADVISORS)
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    for conversation in ("read", "unread"):
        line.event("tidings.advisors.MessageReceived", t0, conversation, conversation_id=conversation,
                   message_id=f"M-{conversation}", sender_role="customer", sender_name="Kim Weber",
                   recipient=_customer(deployment, f"advisor-{conversation}"), sent_at=t0,
                   conversation_url=f"https://beraterfinder.example/c/{conversation}")
    line.event("tidings.advisors.MessageRead", t0 + dt.timedelta(hours=2), "read", conversation_id="read",
               reader_role="advisor", read_at=t0 + dt.timedelta(hours=2))
    line.run(t0, t0 + dt.timedelta(hours=48), dt.timedelta(hours=1))
    mails = line.settle(fired=1, sent=3)  # + each message's own notice (message.received, an event trigger)
    reminders = [m for m in mails if m.header("X-Tidings-Trigger") == "advisors/message.unread_reminder"]
    assert [m.destinations[0] for m in reminders] == [deployment.email("advisor-unread")]


def test_the_wednesday_cohort(deployment: Deployment) -> None:
    line = Timeline(deployment, ADVISORS)
    monday = dt.datetime(2027, 3, 1, 12, tzinfo=UTC)
    for advisor, active, slots in (("few", True, 2), ("many", True, 8), ("inactive", False, 0)):
        line.event("tidings.advisors.AdvisorAvailabilityChanged", monday, advisor, advisor_id=advisor,
                   advisor=_customer(deployment, advisor, time_zone="Europe/Berlin"), profile_active=active,
                   open_slots=slots, calendar_url="https://beraterfinder.example/kalender")
    hour = dt.timedelta(hours=1)
    line.run(monday, dt.datetime(2027, 3, 11, 8, tzinfo=UTC), hour)
    line.event("tidings.advisors.AdvisorAvailabilityChanged", dt.datetime(2027, 3, 11, 9, tzinfo=UTC), "few",
               advisor_id="few", advisor=_customer(deployment, "few", time_zone="Europe/Berlin"), profile_active=True,
               open_slots=6, calendar_url="https://beraterfinder.example/kalender")
    line.run(dt.datetime(2027, 3, 11, 10, tzinfo=UTC), dt.datetime(2027, 3, 25, tzinfo=UTC), hour)
    mails = line.settle(fired=2, sent=2)
    assert {m.destinations[0] for m in mails} == {deployment.email("few")}


def _bookings_with_reminders(dep: Deployment, line: Timeline, t0: dt.datetime) -> collections.Counter[tuple[str, str]]:
    """Two dozen bookings moving in on consecutive days: five mails each, over five weeks."""
    expected: collections.Counter[tuple[str, str]] = collections.Counter()
    for n in range(24):
        move_in = dt.date(2027, 1, 12) + dt.timedelta(days=n)
        line.event("tidings.storage.BookingCreated", t0, f"BK-{n}", booking_id=f"BK-{n}",
                   customer=_customer(dep, f"r{n}"), unit_name="A-1", site_name="Hamburg Hafencity",
                   site_address="Speicherstraße 12", move_in_date=move_in, move_out_date=None, monthly_price=None)
        for trigger in ("created", "after_created", "before_move_in", "move_in_reached", "after_move_in"):
            expected[(dep.email(f"r{n}"), f"booking.{trigger}")] = 1
    return expected


def _finish_with_sentinels(dep: Deployment, expected: collections.Counter[tuple[str, str]]) -> None:
    """One sentinel booking per partition whose reminder is the last timer of its partition.

    Partitions are processed in order, so once a sentinel's record is on the outbound topic
    everything before it on that partition is too. Then every expected mail must have exactly
    one message id there, and no other mail any.
    """
    created = dt.datetime(2027, 2, 18, 8, tzinfo=UTC)
    sentinels = set()
    for p in range(dep.settings.partitions):
        event = {"envelope": new_envelope(STORAGE, now=created, producer="test"), "booking_id": f"SENTINEL-{p}",
                 "customer": _customer(dep, f"sentinel{p}"), "unit_name": "Z-9", "site_name": "Hamburg Hafencity",
                 "site_address": "Speicherstraße 12", "move_in_date": dt.date(2027, 6, 1), "move_out_date": None,
                 "monthly_price": None}
        type_name = "tidings.storage.BookingCreated"
        dep.publisher.publish(dep.topics.for_event(type_name), type_name, event, key=f"SENTINEL-{p}", partition=p)
        expected[(dep.email(f"sentinel{p}"), "booking.created")] = 1
        sentinels.add((dep.email(f"sentinel{p}"), "booking.after_created"))
    dep.publisher.flush()
    emitted: collections.Counter[tuple[str, str]] = collections.Counter()

    def outbound_holds(wanted: set[tuple[str, str]]) -> bool:
        emitted.clear()
        ids = {r["message_id"]: (r["to_address"], r["trigger"]) for r in _outbound(dep)}
        emitted.update(ids.values())
        return wanted <= emitted.keys()

    # The sentinels' created mails are out: their events were processed, so their timers exist.
    dep.wait_for("the sentinels' created mails", lambda: outbound_holds({k for k in expected if "sentinel" in k[0]}))
    dep.tick(*_range(dt.datetime(2027, 2, 18, 14, tzinfo=UTC), dt.datetime(2027, 2, 20, 8, tzinfo=UTC), SIX_HOURS))
    dep.wait_for(lambda: f"the sentinels' reminders (missing {sorted(sentinels - emitted.keys())})",
                 lambda: outbound_holds(sentinels))
    expected.update(dict.fromkeys(sentinels, 1))
    missing, extra = expected - emitted, emitted - expected
    assert not missing and not extra, f"missing {sorted(missing)}, extra {sorted(extra)}"


def _ten_days_fired(dep: Deployment) -> tuple[Timeline, collections.Counter[tuple[str, str]]]:
    """The bookings of the restart tests, and their first ten days of six-hourly ticks fired."""
    line = Timeline(dep, STORAGE)
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    expected = _bookings_with_reminders(dep, line, t0)
    line.run(t0, dt.datetime(2027, 1, 14, 8, tzinfo=UTC), SIX_HOURS)
    return line, expected


def test_timers_fire_exactly_once_across_graceful_restarts(deployment: Deployment) -> None:
    """The worker is stopped twice while it is firing a backlog of ticks, and started again.

    Judged on the outbound topic (committed records): a record written again after a restart
    carries the same message id and the sender's ledger sends an id once (the sender has its own
    restart test), so distinct ids are the mails a customer gets.
    """
    dep = deployment
    line, expected = _ten_days_fired(dep)
    for start, end in ((dt.datetime(2027, 1, 14, 14), dt.datetime(2027, 1, 28, 8)),
                       (dt.datetime(2027, 1, 28, 14), dt.datetime(2027, 2, 18, 8))):
        dep.tick(*_range(start.replace(tzinfo=UTC), end.replace(tzinfo=UTC), SIX_HOURS))
        assert line.worker.stop() == 0  # while those ticks are being processed
        line.worker.start()
        line.worker.wait_serving()
    _finish_with_sentinels(dep, expected)


def test_timers_fire_exactly_once_across_a_rebalance(deployment: Deployment) -> None:
    """A second worker joins while a backlog of ticks is being fired, then the first restarts."""
    dep = deployment
    line, expected = _ten_days_fired(dep)
    second = dep.start_worker("w2")
    second.wait_serving()
    dep.tick(*_range(dt.datetime(2027, 1, 14, 14, tzinfo=UTC), dt.datetime(2027, 1, 28, 8, tzinfo=UTC), SIX_HOURS))
    dep.tick(*_range(dt.datetime(2027, 1, 28, 14, tzinfo=UTC), dt.datetime(2027, 2, 10, 8, tzinfo=UTC), SIX_HOURS))
    assert line.worker.stop() == 0
    line.worker.start()
    line.worker.wait_serving()
    dep.tick(*_range(dt.datetime(2027, 2, 10, 14, tzinfo=UTC), dt.datetime(2027, 2, 18, 8, tzinfo=UTC), SIX_HOURS))
    _finish_with_sentinels(dep, expected)


def _outbound(dep: Deployment) -> list[dict[str, Any]]:
    """Every committed record of the outbound topic, decoded."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.codecs.avro import SingleObjectCodec
    from streams.codecs.schemas import SchemaRepository
    from streams.settings import REPO_ROOT

    codec = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))
    consumer = Consumer({"bootstrap.servers": dep.bootstrap, "group.id": f"check-{dt.datetime.now().timestamp()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    topic = dep.topics.outbound
    try:
        partitions = range(dep.settings.partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions if ends[p] > 0])
        records, done = [], {p for p in partitions if ends[p] == 0}
        while len(done) < len(ends):
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                if msg.error() is None:
                    records.append(codec.decode(msg.value()).record)
                    if msg.offset() >= ends[msg.partition()] - 2:  # the last record or its commit marker
                        done.add(msg.partition())
            position = {tp.partition: tp.offset for tp in consumer.position(
                [TopicPartition(topic, p) for p in partitions if p not in done])}
            done |= {p for p, off in position.items() if off >= ends[p]}
        return records
    finally:
        consumer.close()
