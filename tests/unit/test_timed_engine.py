"""The timed-trigger engine on dict stores: state follows the events, timers follow the state.

No Kafka: the engine is handed plain dicts where a worker hands it Faust tables, and time moves
only by the ``now`` of each tick, so a booking's whole life runs in milliseconds. Firings are
checked as decisions (which trigger, which occurrence, when); rendering them is covered by the
template tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from streams import metrics as metrics_module
from streams.domain.rules import Catalog
from streams.domain.samples import new_envelope
from streams.domain.tenants import Tenant, TenantDirectory, TriggerSetting
from streams.rendering.render import Renderer
from streams.settings import REPO_ROOT
from streams.state import values
from streams.triggers.engine import TimedEngine, firings_value
from streams.triggers.index import TimerIndex

UTC = dt.timezone.utc
CATALOG = Catalog.load()


def _tenant(tenant_id: str, **params: dict[str, Any]) -> Tenant:
    """An example tenant with every timed trigger of its packs on, and the given parameters."""
    base = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants").get(tenant_id)
    assert base is not None
    triggers = dict(base.triggers)
    for trigger in CATALOG.timed_triggers():
        if trigger.pack in base.packs:
            triggers[trigger.key] = TriggerSetting(enabled=True, params=params.get(trigger.id, {}))
    return base.model_copy(update={"triggers": triggers})


class World:
    """One partition's worth of tables, an engine and a clock that only ticks move."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.tenants = TenantDirectory({tenant.tenant_id: tenant})
        self.metrics = metrics_module.create()
        self.engine = TimedEngine(CATALOG, self.tenants, Renderer(REPO_ROOT / "templates"), self.metrics)
        self.states: dict[str, dict[str, bytes]] = {t: {} for t in CATALOG.tables()}
        self.timers: dict[str, bytes] = {}
        self.engine.rebuild(0, [])
        self.fired: list[tuple[dt.datetime, str, str, str]] = []  # (tick, entity, slot, occurrence)

    def event(self, type_name: str, at: dt.datetime, **fields: Any) -> None:
        record = {"envelope": new_envelope(self.tenant.tenant_id, now=at), **fields}
        self.engine.on_event(self.states, self.timers, 0, type_name, record, self.tenant)

    def run(self, until: dt.datetime, start: dt.datetime, every: dt.timedelta = dt.timedelta(hours=1)) -> None:
        now = start
        while now <= until:
            for firing in self.engine.on_tick(self.states, self.timers, 0, now).firings:
                self.fired.append((now, firing["entity_id"], firing["timer"][1], firing["timer"][2]))
            now += every

    def slots(self) -> list[str]:
        return [slot.split("/", 1)[1] for _, _, slot, _ in self.fired]

    def skipped(self, reason: str) -> float:
        return sum(
            s.value for metric in self.metrics.timers_skipped.collect() for s in metric.samples
            if s.name.endswith("_total") and s.labels["reason"] == reason
        )


def _customer(**extra: Any) -> dict[str, Any]:
    return {"id": "CU-1", "email": "jana@example.org", "name": "Jana", "locale": "de", "time_zone": None, **extra}


def _booking(world: World, at: dt.datetime, move_in: dt.date, move_out: dt.date | None, booking_id: str = "BK-1") -> None:
    world.event(
        "tidings.storage.BookingCreated", at, booking_id=booking_id, customer=_customer(), unit_name="B-104",
        site_name="Hafencity", site_address="Speicherstraße 12", move_in_date=move_in, move_out_date=move_out,
        monthly_price=None,
    )


def test_a_booking_life_fires_each_reminder_once_at_nine_local_and_follows_moved_dates() -> None:
    world = World(_tenant("lagerhaus-nord", **{"booking.before_move_out": {"days": 14}}))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    _booking(world, t0, dt.date(2027, 1, 20), dt.date(2027, 6, 30))
    world.run(dt.datetime(2027, 1, 10, tzinfo=UTC), start=t0)
    world.event("tidings.storage.BookingDatesChanged", dt.datetime(2027, 1, 10, 12, tzinfo=UTC), booking_id="BK-1",
                customer=_customer(), move_in_date=dt.date(2027, 1, 25), move_out_date=dt.date(2027, 6, 30))
    world.run(dt.datetime(2027, 6, 20, tzinfo=UTC), start=dt.datetime(2027, 1, 10, 13, tzinfo=UTC))
    world.event("tidings.storage.BookingCancelled", dt.datetime(2027, 6, 20, 10, tzinfo=UTC), booking_id="BK-1",
                customer=_customer(), move_out_date=dt.date(2027, 6, 30))
    world.run(dt.datetime(2027, 7, 31, tzinfo=UTC), start=dt.datetime(2027, 6, 20, 11, tzinfo=UTC))

    assert world.fired == [
        # 2 days after the booking was created, 09:00 in Berlin (CET = UTC+1)
        (dt.datetime(2027, 1, 6, 8, tzinfo=UTC), "BK-1", "storage/booking.after_created", "2027-01-04T08:00:00+00:00"),
        # move-in moved from the 20th to the 25th before the reminder: 3 days before the new date
        (dt.datetime(2027, 1, 22, 8, tzinfo=UTC), "BK-1", "storage/booking.before_move_in", "2027-01-25"),
        (dt.datetime(2027, 1, 25, 8, tzinfo=UTC), "BK-1", "storage/booking.move_in_reached", "2027-01-25"),
        (dt.datetime(2027, 2, 1, 8, tzinfo=UTC), "BK-1", "storage/booking.after_move_in", "2027-01-25"),
        # 14 days (the tenant's figure) before move-out, after the switch to summer time (CEST = UTC+2)
        (dt.datetime(2027, 6, 16, 7, tzinfo=UTC), "BK-1", "storage/booking.before_move_out", "2027-06-30"),
        # cancelled on 06-20: no move-out mail
    ]
    # Nothing pending for the cancelled booking; what fired is remembered in case it is reverted.
    assert [json.loads(v)["timers"] for v in world.timers.values()] == [[]]
    assert world.engine.index.pending() == 0


def test_a_reverted_cancellation_brings_back_only_what_has_not_fired() -> None:
    world = World(_tenant("lagerhaus-nord"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    _booking(world, t0, dt.date(2027, 1, 20), dt.date(2027, 3, 31))
    world.run(dt.datetime(2027, 1, 21, tzinfo=UTC), start=t0)
    fired_before = list(world.slots())
    world.event("tidings.storage.BookingCancelled", dt.datetime(2027, 1, 21, 10, tzinfo=UTC), booking_id="BK-1",
                customer=_customer(), move_out_date=dt.date(2027, 3, 31))
    world.event("tidings.storage.BookingCancellationReverted", dt.datetime(2027, 1, 21, 11, tzinfo=UTC),
                booking_id="BK-1", customer=_customer(), unit_name="B-104", site_name="Hafencity",
                move_out_date=dt.date(2027, 3, 31))
    world.run(dt.datetime(2027, 4, 2, tzinfo=UTC), start=dt.datetime(2027, 1, 21, 12, tzinfo=UTC))
    assert fired_before == ["booking.after_created", "booking.before_move_in", "booking.move_in_reached"]
    assert world.slots()[3:] == ["booking.after_move_in", "booking.before_move_out", "booking.move_out_reached"]
    assert len(world.slots()) == len(set(world.slots()))


def _invoice(world: World, at: dt.datetime, due: dt.date, invoice_id: str = "INV-1") -> None:
    world.event(
        "tidings.storage.InvoiceIssued", at, invoice_id=invoice_id, booking_id=None, customer=_customer(),
        invoice_number="2027-0001", amount={"amount_minor": 8900, "currency": "EUR"}, due_date=due,
        pay_url="https://pay.example/inv-1",
    )


def test_dunning_steps_stop_when_the_invoice_is_paid() -> None:
    world = World(_tenant("lagerhaus-nord"))
    t0 = dt.datetime(2027, 2, 1, 6, tzinfo=UTC)
    _invoice(world, dt.datetime(2027, 1, 15, tzinfo=UTC), dt.date(2027, 2, 1))
    world.run(dt.datetime(2027, 2, 12, 12, tzinfo=UTC), start=t0)
    world.event("tidings.storage.InvoicePaid", dt.datetime(2027, 2, 12, 13, tzinfo=UTC), invoice_id="INV-1",
                paid_at=dt.datetime(2027, 2, 12, 13, tzinfo=UTC))
    world.run(dt.datetime(2027, 3, 31, tzinfo=UTC), start=dt.datetime(2027, 2, 12, 14, tzinfo=UTC))
    assert [(t.date().isoformat(), s) for t, _, s, _ in world.fired] == [
        ("2027-02-01", "storage/invoice.due_reached"),
        ("2027-02-04", "storage/invoice.after_due#1"),
        ("2027-02-11", "storage/invoice.after_due#2"),
    ]
    assert world.timers == {} and world.states["storage.invoices"] == {}  # paid: forgotten (least data)


def test_missed_time_fires_within_grace_in_due_order_and_skips_what_is_too_late() -> None:
    world = World(_tenant("lagerhaus-nord"))
    _invoice(world, dt.datetime(2027, 1, 15, tzinfo=UTC), dt.date(2027, 2, 1))
    # The worker was down from 01-31 to 02-12 10:00: due_reached (02-01, grace 1 day) and step 1
    # (02-04, grace 2 days) are too late; step 2 (02-11 08:00 UTC, grace 2 days) still goes out.
    world.run(dt.datetime(2027, 1, 31, tzinfo=UTC), start=dt.datetime(2027, 1, 30, tzinfo=UTC))
    world.run(dt.datetime(2027, 2, 12, 10, tzinfo=UTC), start=dt.datetime(2027, 2, 12, 10, tzinfo=UTC))
    assert world.slots() == ["invoice.after_due#2"]
    assert world.skipped("late") == 2


def test_an_event_arriving_after_its_date_follows_the_same_policy() -> None:
    world = World(_tenant("lagerhaus-nord"))
    now = dt.datetime(2027, 1, 21, 7, tzinfo=UTC)
    _booking(world, now, dt.date(2027, 1, 20), None)  # entered the day after move-in
    world.run(now + dt.timedelta(hours=3), start=now)
    # move-in reached (01-20 08:00 UTC) is 23 h late, past its 12 h grace; 3 days before: too.
    assert "booking.move_in_reached" not in world.slots() and "booking.before_move_in" not in world.slots()
    assert world.skipped("late") == 2


def test_a_trigger_turned_off_after_planning_is_revalidated_away_at_fire_time() -> None:
    tenant = _tenant("lagerhaus-nord")
    world = World(tenant)
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    _booking(world, t0, dt.date(2027, 1, 20), None)
    world.run(dt.datetime(2027, 1, 16, tzinfo=UTC), start=t0)
    # Turned off while its timer is pending; tenant changes do not touch the timers table.
    triggers = dict(tenant.triggers)
    triggers["storage/booking.before_move_in"] = TriggerSetting(enabled=False)
    world.tenants.put(tenant.model_copy(update={"triggers": triggers}))
    world.run(dt.datetime(2027, 1, 21, tzinfo=UTC), start=dt.datetime(2027, 1, 16, 1, tzinfo=UTC))
    assert "booking.before_move_in" not in world.slots() and "booking.move_in_reached" in world.slots()
    assert world.skipped("invalid") == 1


def test_a_tenant_moving_its_x_days_later_delays_the_pending_reminder() -> None:
    tenant = _tenant("lagerhaus-nord", **{"booking.before_move_in": {"days": 10}})
    world = World(tenant)
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    _booking(world, t0, dt.date(2027, 1, 20), None)
    triggers = dict(tenant.triggers)
    triggers["storage/booking.before_move_in"] = TriggerSetting(enabled=True, params={"days": 3})
    world.tenants.put(tenant.model_copy(update={"triggers": triggers}))
    world.run(dt.datetime(2027, 1, 21, tzinfo=UTC), start=t0)
    assert [(t, s) for t, _, s, _ in world.fired if s.endswith("before_move_in")] == [
        (dt.datetime(2027, 1, 17, 8, tzinfo=UTC), "storage/booking.before_move_in")
    ]


def _station(world: World, at: dt.datetime) -> None:
    world.event(
        "tidings.charging.StationRegistered", at, station_id="ST-1", customer=_customer(time_zone="Europe/Amsterdam"),
        station_name="Thuislader", station_address=None, station_url="https://cp.example/st-1",
    )


def _heartbeat(world: World, at: dt.datetime) -> None:
    world.event("tidings.charging.StationHeartbeat", at, station_id="ST-1", seen_at=at)


def test_a_station_outage_mails_once_a_flap_shorter_than_the_window_never() -> None:
    world = World(_tenant("voltpark-nl"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    minute = dt.timedelta(minutes=1)
    _station(world, t0)
    for m in range(0, 31, 5):
        _heartbeat(world, t0 + m * minute)
        world.run(t0 + (m + 4) * minute, start=t0 + m * minute, every=minute)
    # a flap: silent for 10 minutes (window 15), then back
    world.run(t0 + 39 * minute, start=t0 + 31 * minute, every=minute)
    _heartbeat(world, t0 + 40 * minute)
    # an outage: silent from minute 40 on; the gateway's explicit report of the same outage later
    world.run(t0 + 60 * minute, start=t0 + 40 * minute, every=minute)
    world.event("tidings.charging.StationConnectivityLost", t0 + 61 * minute, station_id="ST-1",
                customer=_customer(time_zone="Europe/Amsterdam"), station_name="Thuislader", station_address=None,
                last_seen_at=t0 + 40 * minute, station_url="https://cp.example/st-1")
    world.run(t0 + 120 * minute, start=t0 + 61 * minute, every=minute)
    assert [(t, o) for t, _, _, o in world.fired] == [(t0 + 55 * minute, (t0 + 40 * minute).isoformat())]
    # back, and lost again: the explicit report fires at the next tick, before the window is up
    _heartbeat(world, t0 + 130 * minute)
    world.event("tidings.charging.StationConnectivityLost", t0 + 131 * minute, station_id="ST-1",
                customer=_customer(time_zone="Europe/Amsterdam"), station_name="Thuislader", station_address=None,
                last_seen_at=t0 + 130 * minute, station_url="https://cp.example/st-1")
    world.run(t0 + 150 * minute, start=t0 + 132 * minute, every=minute)
    assert [t for t, _, _, _ in world.fired] == [t0 + 55 * minute, t0 + 132 * minute]


def test_an_inactive_customer_loses_pending_outage_mails() -> None:
    world = World(_tenant("voltpark-nl"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    _station(world, t0)
    _heartbeat(world, t0)
    world.event("tidings.charging.StationCustomerDeactivated", t0 + dt.timedelta(minutes=5), station_id="ST-1",
                customer_id="CU-1")
    world.run(t0 + dt.timedelta(hours=2), start=t0, every=dt.timedelta(minutes=1))
    assert world.fired == [] and world.timers == {}


def _message(world: World, at: dt.datetime, conversation: str, sender_role: str = "customer") -> None:
    world.event(
        "tidings.advisors.MessageReceived", at, conversation_id=conversation, message_id=f"m-{at.isoformat()}",
        sender_role=sender_role, sender_name="Kim", recipient=_customer(email="advisor@example.org"), sent_at=at,
        conversation_url="https://app.example/c/1",
    )


def test_an_unanswered_message_reminds_the_advisor_unless_read_in_time() -> None:
    world = World(_tenant("beraterfinder"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    _message(world, t0, "read-in-time")
    _message(world, t0, "left-unread")
    _message(world, t0 + dt.timedelta(hours=3), "left-unread")  # a second message: still 24 h from the first
    world.event("tidings.advisors.MessageRead", t0 + dt.timedelta(hours=2), conversation_id="read-in-time",
                reader_role="advisor", read_at=t0 + dt.timedelta(hours=2))
    world.run(t0 + dt.timedelta(hours=48), start=t0)
    assert [(t, e) for t, e, _, _ in world.fired] == [(t0 + dt.timedelta(hours=24), "left-unread")]


def _availability(world: World, at: dt.datetime, advisor_id: str, active: bool, slots: int) -> None:
    world.event(
        "tidings.advisors.AdvisorAvailabilityChanged", at, advisor_id=advisor_id,
        advisor=_customer(email=f"{advisor_id}@example.org", time_zone="Europe/Berlin"),
        profile_active=active, open_slots=slots, calendar_url="https://app.example/cal",
    )


def test_every_wednesday_advisors_with_an_active_profile_and_few_slots() -> None:
    world = World(_tenant("beraterfinder"))
    monday = dt.datetime(2027, 3, 1, 12, tzinfo=UTC)
    _availability(world, monday, "few", True, 2)
    _availability(world, monday, "many", True, 8)
    _availability(world, monday, "inactive", False, 0)
    world.run(dt.datetime(2027, 3, 11, tzinfo=UTC), start=monday)
    _availability(world, dt.datetime(2027, 3, 11, 9, tzinfo=UTC), "few", True, 6)  # Thursday: now enough slots
    world.run(dt.datetime(2027, 3, 31, tzinfo=UTC), start=dt.datetime(2027, 3, 11, 10, tzinfo=UTC))
    assert [(t, e, o) for t, e, _, o in world.fired] == [
        (dt.datetime(2027, 3, 3, 8, tzinfo=UTC), "few", "2027-03-03"),  # 09:00 CET
        (dt.datetime(2027, 3, 10, 8, tzinfo=UTC), "few", "2027-03-10"),
    ]


def test_the_wednesday_reminder_keeps_nine_local_across_the_dst_change() -> None:
    world = World(_tenant("beraterfinder"))
    _availability(world, dt.datetime(2027, 3, 20, tzinfo=UTC), "few", True, 1)
    world.run(dt.datetime(2027, 4, 1, tzinfo=UTC), start=dt.datetime(2027, 3, 20, tzinfo=UTC))
    # Berlin switches to summer time on 2027-03-28
    assert [t for t, _, _, _ in world.fired] == [dt.datetime(2027, 3, 24, 8, tzinfo=UTC), dt.datetime(2027, 3, 31, 7, tzinfo=UTC)]


def test_an_appointment_reminder_follows_a_reschedule_and_dies_with_a_cancellation() -> None:
    world = World(_tenant("beraterfinder"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    for appointment in ("moved", "cancelled"):
        world.event(
            "tidings.advisors.AppointmentBooked", t0, appointment_id=appointment, advisor=_customer(email="a@example.org"),
            customer=_customer(), customer_phone=None, starts_at=dt.datetime(2027, 1, 10, 9, 30, tzinfo=UTC),
            ends_at=dt.datetime(2027, 1, 10, 10, tzinfo=UTC), meeting_type="video", location=None,
            meeting_url="https://meet.example/x", concern=None, customer_note=None, advisor_url="https://a.example",
            manage_url="https://m.example/x",
        )
    world.event("tidings.advisors.AppointmentRescheduled", t0 + dt.timedelta(hours=1), appointment_id="moved",
                starts_at=dt.datetime(2027, 1, 12, 14, tzinfo=UTC), ends_at=dt.datetime(2027, 1, 12, 15, tzinfo=UTC),
                meeting_type="video", location=None, meeting_url="https://meet.example/y")
    world.event("tidings.advisors.AppointmentCancelledByCustomer", t0 + dt.timedelta(hours=1), appointment_id="cancelled")
    world.run(dt.datetime(2027, 1, 14, tzinfo=UTC), start=t0, every=dt.timedelta(minutes=30))
    assert [(t, e) for t, e, _, _ in world.fired] == [(dt.datetime(2027, 1, 11, 14, tzinfo=UTC), "moved")]
    assert world.states["advisors.appointments"].keys() == {"beraterfinder/moved"}


def test_a_tick_costs_what_is_due_not_what_is_pending() -> None:
    world = World(_tenant("lagerhaus-nord"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    for n in range(2000):
        _booking(world, t0, dt.date(2027, 1, 20) + dt.timedelta(days=n % 300), None, booking_id=f"BK-{n}")
    pending = world.engine.index.pending()
    popped: list[int] = []
    original = world.engine.index.pop_due

    def counting(partition: int, now: float, limit: int) -> list[str]:
        keys = original(partition, now, limit)
        popped.append(len(keys))
        return keys

    world.engine.index.pop_due = counting  # type: ignore[method-assign]
    world.run(dt.datetime(2027, 1, 6, 9, tzinfo=UTC), start=dt.datetime(2027, 1, 6, 7, tzinfo=UTC))
    assert pending == 2000
    # 2 days after creation every booking is due once (after_created); nothing else is touched
    assert popped == [0, 2000, 0]


def test_the_index_is_rebuilt_from_the_timers_table_alone() -> None:
    world = World(_tenant("lagerhaus-nord"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    for n in range(5):
        _booking(world, t0, dt.date(2027, 1, 20 + n), None, booking_id=f"BK-{n}")
    fresh = TimedEngine(CATALOG, world.tenants, world.engine.renderer, world.metrics)
    assert fresh.rebuild(0, world.timers.items()) == 5
    world.engine = fresh
    world.run(dt.datetime(2027, 1, 26, tzinfo=UTC), start=t0)
    assert sorted(e for _, e, s, _ in world.fired if s.endswith("move_in_reached")) == [f"BK-{n}" for n in range(5)]


def test_events_during_an_index_build_leave_ticks_firing_exactly_what_the_table_holds() -> None:
    world = World(_tenant("lagerhaus-nord"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    for n in range(600):
        _booking(world, t0, dt.date(2027, 1, 20) + dt.timedelta(days=n % 30), None, booking_id=f"BK-{n:03d}")
    # A restart: the index is built again from the table, in slices, while events keep coming.
    world.engine = TimedEngine(CATALOG, world.tenants, world.engine.renderer, world.metrics, index=TimerIndex(slice_seconds=0))
    at = dt.datetime(2027, 1, 5, 10, tzinfo=UTC)

    def rows() -> Iterator[tuple[str, bytes]]:
        yield from sorted(world.timers.items())  # as RocksDB reads: the table as it was at the first row

    def cancel(booking_id: str) -> None:
        world.event("tidings.storage.BookingCancelled", at, booking_id=booking_id, customer=_customer(), move_out_date=None)

    def move(booking_id: str, move_in: dt.date) -> None:
        world.event("tidings.storage.BookingDatesChanged", at, booking_id=booking_id, customer=_customer(),
                    move_in_date=move_in, move_out_date=None)

    async def events() -> None:
        await asyncio.sleep(0)  # the first slice is read: BK-000 to BK-255
        assert world.engine.index.building(0)
        cancel("BK-005")  # its row read already
        cancel("BK-400")  # its row not read yet
        move("BK-006", dt.date(2027, 2, 27))
        move("BK-401", dt.date(2027, 2, 27))
        _booking(world, at, dt.date(2027, 2, 3), None, booking_id="BK-900")
        await asyncio.sleep(0)
        assert world.engine.index.building(0)
        move("BK-402", dt.date(2027, 1, 10))  # sooner than any other, and already past its 3-days-before
        cancel("BK-900")  # created during the build, gone again

    async def build() -> int | None:
        task = asyncio.create_task(world.engine.build(0, rows()))
        await events()
        return await task

    assert asyncio.run(build()) == 600 - 2
    # The reference: the same tables, the index rebuilt at once from what they hold now.
    reference = World(world.tenant)
    reference.states = {table: dict(rows) for table, rows in world.states.items()}
    reference.timers = dict(world.timers)
    reference.engine.rebuild(0, reference.timers.items())
    until, start = dt.datetime(2027, 3, 5, tzinfo=UTC), dt.datetime(2027, 1, 5, 11, tzinfo=UTC)
    world.run(until, start)
    reference.run(until, start)
    assert world.fired == reference.fired
    fired = {(e, s.split("/", 1)[1]) for _, e, s, _ in world.fired}
    assert ("BK-401", "booking.move_in_reached") in fired and ("BK-402", "booking.move_in_reached") in fired
    assert not {e for e, _ in fired} & {"BK-005", "BK-400", "BK-900"}
    assert world.engine.index.pending() == reference.engine.index.pending()


def test_a_bad_address_kept_in_state_is_rejected_when_its_mail_renders() -> None:
    world = World(_tenant("lagerhaus-nord"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    world.event(
        "tidings.storage.InvoiceIssued", t0, invoice_id="INV-X", booking_id=None,
        customer=_customer(email="two@@example.org"), invoice_number="2027-1",
        amount={"amount_minor": 100, "currency": "EUR"}, due_date=dt.date(2027, 2, 1), pay_url="https://pay.example/x",
    )
    firings = world.engine.on_tick(world.states, world.timers, 0, dt.datetime(2027, 2, 1, 9, tzinfo=UTC)).firings
    assert len(firings) == 1
    outcome = world.engine.render_firing(firings[0], "ticks")
    assert outcome.mails == [] and [e.reason for _, e in outcome.rejections] == ["invalid_recipient"]


def test_a_firings_record_splices_the_stored_state_and_reads_back_as_if_encoded_whole() -> None:
    world = World(_tenant("lagerhaus-nord"))
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)
    for n in range(3):
        _booking(world, t0, dt.date(2027, 1, 20), None, booking_id=f"BK-{n}")
    fired = world.engine.on_tick(world.states, world.timers, 0, dt.datetime(2027, 1, 20, 9, tzinfo=UTC))
    assert len(fired.firings) == 3 and len(fired.states) == 3
    value = firings_value(fired, 1234.5)
    assert values.loads(value) == values.loads(values.dumps({"firings": fired.firings, "decided_at": 1234.5}))
    assert values.loads(value)["firings"][0]["state"]["move_in_date"] == dt.date(2027, 1, 20)


def test_revalidating_one_slot_plans_exactly_that_slot_of_the_full_plan() -> None:
    # Fire-time revalidation plans only the due timer's slot; it must be the full plan's timer.
    from streams.domain.projection import public
    from streams.domain.timers import plan_trigger

    tenant = _tenant("lagerhaus-nord", **{"invoice.after_due": {"steps": [2, 9, 30]}})
    world = World(tenant)
    _invoice(world, dt.datetime(2027, 1, 15, tzinfo=UTC), dt.date(2027, 2, 1))
    fields = public(values.loads(world.states["storage.invoices"]["lagerhaus-nord/INV-1"]))
    now = dt.datetime(2027, 1, 20, tzinfo=UTC)
    trigger = next(t for t in CATALOG.timed_triggers() if t.key == "storage/invoice.after_due")
    full = plan_trigger(trigger, fields, tenant, {}, now)
    assert [t.slot for t in full] == [f"storage/invoice.after_due#{n}" for n in (1, 2, 3)]
    assert [t.due.date() for t in full] == [dt.date(2027, 2, 3), dt.date(2027, 2, 10), dt.date(2027, 3, 3)]
    for timer in full:
        assert plan_trigger(trigger, fields, tenant, {}, now, only_slot=timer.slot) == [timer]
    assert plan_trigger(trigger, fields, tenant, {}, now, only_slot="storage/invoice.after_due#4") == []
    # An occurrence already done is not planned again, with or without the slot.
    done = {"storage/invoice.after_due#2": "2027-02-01"}
    assert plan_trigger(trigger, fields, tenant, done, now, only_slot="storage/invoice.after_due#2") == []
