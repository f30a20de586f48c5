"""A tick that finds its partition's index not ready builds it without holding up the other agents.

The tick handler and the ingest handler share one event loop, as in a worker: while the tick
reads the timers table in slices, a password reset and a booking go through ingest, and the
booking's timers (written during the build) are in the index the tick then fires from.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import orjson

from streams.delivery.outbox import OUTBOUND_PRIORITY
from streams.domain.samples import sample_event
from streams.ingest.agents import IngestHandler
from streams.runtime.guard import Outcome
from streams.triggers.agents import TickHandler, tick_value
from streams.triggers.engine import TimedEngine
from streams.triggers.index import TimerIndex
from tests.agents.conftest import NOW, TOPICS, FixedClock, MemoryTables, Record, Runtime

TENANT = "lagerhaus-nord"
BOOKING = "tidings.storage.BookingCreated"
RESET = "tidings.storage.PasswordResetRequested"
ROWS = 3000


def _event(codec: Any, catalog: Any, type_name: str) -> Record:
    event = sample_event(catalog.samples, type_name, TENANT, now=NOW)
    return Record(topic=f"t.{catalog.topic_suffix_for(type_name)}", value=codec.encode(type_name, event))


class World:
    def __init__(self, codec: Any, catalog: Any, tenants: Any, pipeline: Any, metrics: Any) -> None:
        self.engine = TimedEngine(catalog, tenants, pipeline.renderer, metrics, index=TimerIndex(slice_seconds=0))
        self.tables = MemoryTables(catalog)
        # Entities whose timers are far off: the build reads them, no tick here fires them.
        later = (NOW + dt.timedelta(days=400)).timestamp()
        for n in range(ROWS):
            timers = [[later + n, f"storage.bookings/{TENANT}/OLD-{n:05d}/storage.booking.move_in_reached", "2028-01-01", 0]]
            self.tables.timers[f"storage.bookings/{TENANT}/OLD-{n:05d}"] = orjson.dumps({"timers": timers, "done": {}})
        self.fired: list[bytes] = []
        self.tick = TickHandler(self.engine, self.tables, metrics, max_fires_per_tick=100, max_record_bytes=1_000_000,
                                send_firings=lambda p, value: self.fired.append(value))
        self.ingest = IngestHandler(pipeline, self.engine, self.tables, FixedClock(), metrics, 4)
        self.tick_rt, self.ingest_rt = Runtime("tick"), Runtime("ingest")

    async def ingest_during_the_build(self, *records: Record) -> list[tuple[Outcome, bool]]:
        """Each record through ingest while the tick's build is under way; with whether it still was."""
        out = []
        for record in records:
            await asyncio.sleep(0)
            outcome = await self.ingest_rt.guard(record, self.ingest, record)
            out.append((outcome, self.engine.index.building(0)))
        return out


def test_ingest_runs_while_a_tick_builds_the_index_and_the_tick_fires_what_it_wrote(
    codec: Any, catalog: Any, tenants: Any, pipeline: Any, metrics: Any,
) -> None:
    world = World(codec, catalog, tenants, pipeline, metrics)
    tick = Record(topic="t.ticks", value=tick_value(NOW))
    reset, booking = _event(codec, catalog, RESET), _event(codec, catalog, BOOKING)

    async def run() -> tuple[Outcome, list[tuple[Outcome, bool]]]:
        ticked = asyncio.create_task(world.tick_rt.guard(tick, world.tick, tick))
        ingested = await world.ingest_during_the_build(reset, booking)
        return await ticked, ingested

    ticked, ingested = asyncio.run(run())
    # Both events were done while the build was still reading: neither waited for it.
    assert ingested == [(Outcome.COMMITTED, True), (Outcome.COMMITTED, True)]
    assert world.ingest_rt.writer.on(TOPICS[OUTBOUND_PRIORITY]), "the password reset's mail"
    assert ticked is Outcome.COMMITTED and world.engine.index.ready(0)
    # The booking's timers were planned during the build: they are in the index all the same.
    booked = [key for key in world.tables.timers if not key.split("/")[-1].startswith("OLD-")]
    assert len(booked) == 1
    assert world.engine.index.pending() == ROWS + 1
    due = world.engine.index.earliest(0)
    assert due is not None and due < (NOW + dt.timedelta(days=400)).timestamp()
    # A later tick at the booking's first due time fires it, and nothing of the far-off rows.
    later = Record(topic="t.ticks", value=tick_value(dt.datetime.fromtimestamp(due, dt.timezone.utc)))
    assert world.tick_rt.run(world.tick, later) is Outcome.COMMITTED
    firings = [f for value in world.fired for f in orjson.loads(value)["firings"]]
    assert firings and {f["entity_id"] for f in firings} == {booked[0].split("/")[-1]}


def test_a_rebalance_during_the_build_drops_the_tick_and_the_next_tick_builds_again(
    codec: Any, catalog: Any, tenants: Any, pipeline: Any, metrics: Any,
) -> None:
    world = World(codec, catalog, tenants, pipeline, metrics)
    tick = Record(topic="t.ticks", value=tick_value(NOW))

    async def run() -> Outcome:
        ticked = asyncio.create_task(world.tick_rt.guard(tick, world.tick, tick))
        await asyncio.sleep(0)
        assert world.engine.index.building(0)
        world.tick.invalidate()
        return await ticked

    assert asyncio.run(run()) is Outcome.COMMITTED  # a tick may be lost: the next one fires what is due by then
    assert not world.engine.index.ready(0) and not world.engine.index.building(0)
    assert world.tick_rt.run(world.tick, tick) is Outcome.COMMITTED
    assert world.engine.index.ready(0) and world.engine.index.pending() == ROWS


def test_the_gauges_say_which_partitions_are_built_and_their_pending_timers_as_each_build_ends(
    codec: Any, catalog: Any, tenants: Any, pipeline: Any, metrics: Any,
) -> None:
    world = World(codec, catalog, tenants, pipeline, metrics)
    ready, pending = metrics.timer_partitions_ready._value, metrics.timers_pending._value

    async def build() -> tuple[float, float]:
        await world.tick._build(0)
        # Read before the tick that waited for the build goes on: a reader polling /metrics
        # between the build and the end of that tick sees the partition's timers already.
        return ready.get(), pending.get()

    assert asyncio.run(build()) == (1, ROWS)
    world.tick.invalidate()
    assert (ready.get(), pending.get()) == (0, 0)
    assert world.tick_rt.run(world.tick, Record(topic="t.ticks", value=tick_value(NOW))) is Outcome.COMMITTED
    assert (ready.get(), pending.get()) == (1, ROWS)
