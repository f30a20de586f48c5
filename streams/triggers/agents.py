"""Faust wiring of the timed triggers: the tick agent, the firing renderer and the internal ticker.

Time enters as records on the ticks topic, one per partition and interval, each carrying
``now``. Faust cannot write tables from ``@app.timer`` (DESIGN invariant 3), and a stream can:
the tick agent pops the partition's due timers from the in-memory index, revalidates them,
updates the ``timers`` table and writes firing records, all in the tick's exactly-once
transaction on that partition. The firings agent renders them into the outbound topic, like the
ingest agent renders event triggers. Splitting the two keeps a tick that finds ten thousand due
timers short: deciding is cheap, rendering is not.

Where ``now`` comes from is a setting: the leader worker's clock (``tick_source=internal``) or
whoever publishes ticks (``external``: tests and replays run months in seconds with
``tidings-tick``). A tick's ``now`` is the only clock the timers see, so a replay of the ticks
fires the same timers.

The index is per worker and in memory; after a rebalance every partition is rebuilt from the
``timers`` table before its next tick (``TimerIndex``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from streams.customers.feed import report_skipped
from streams.delivery.outbox import Outbox
from streams.errors import RejectedInput
from streams.ingest.deadletter import dead_letter_headers
from streams.ingest.pipeline import Rejection
from streams.state import values
from streams.triggers.engine import firings_value

if TYPE_CHECKING:
    import faust

    from streams.app import Runtime
    from streams.state.tables import StateTables

log = logging.getLogger(__name__)

FIRINGS_PER_RECORD = 100  # keeps a firing record (state snapshots included) far below Kafka's 1 MB


def tick_value(now: dt.datetime) -> bytes:
    if now.tzinfo is None:
        raise ValueError("a tick's now must be an aware datetime")
    return json.dumps({"now": now.astimezone(dt.timezone.utc).isoformat()}).encode()


def parse_tick(value: bytes | None) -> dt.datetime:
    try:
        now = dt.datetime.fromisoformat(json.loads(value or b"")["now"])
    except (ValueError, KeyError, TypeError) as e:
        raise RejectedInput(f"not a tick: {e}", reason="bad_tick") from None
    if now.tzinfo is None:
        raise RejectedInput("a tick's now has no zone", reason="bad_tick")
    return now


def register(app: faust.App, rt: Runtime, tables: StateTables) -> None:
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    ticks = app.topic(rt.topics.ticks, **raw)
    firings = app.topic(rt.topics.firings, **raw)
    outbox = Outbox(app, rt)
    dead_letter = app.topic(rt.topics.dead_letter, **raw)
    engine, m, pipeline = rt.timed, rt.metrics, rt.pipeline

    async def on_assignment_change(sender: Any, tps: Any, **kwargs: Any) -> None:
        engine.index.invalidate()

    app.on_partitions_assigned.connect(on_assignment_change)
    # Set while no tick is being decided. Rendering waits for it: deciding ten thousand due
    # timers takes a fraction of a second, rendering their mails takes a minute, and sharing the
    # event loop fairly would make the last timers of a wave fire many seconds late.
    idle = asyncio.Event()
    idle.set()
    app.on_partitions_revoked.connect(on_assignment_change)

    async def dead_letter_send(msg: Any, rejection: Rejection, value: bytes) -> None:
        log.warning("dead-lettered %s[%s]@%s: %s (%s)", msg.topic, msg.partition, msg.offset, rejection.reason, rejection.detail)
        await dead_letter.send(
            key=msg.key, value=value, partition=msg.partition,
            headers=dead_letter_headers(rejection, topic=msg.topic, partition=msg.partition, offset=msg.offset),
        )
        m.failures.labels(rejection.stage, rejection.reason).inc()
        m.dead_letters.labels(rejection.stage, rejection.reason).inc()

    async def tick(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            msg = event.message
            try:
                now = parse_tick(event.value)
            except RejectedInput as e:
                await dead_letter_send(msg, Rejection("tick", e.reason, e.detail), msg.value or b"")
                continue
            p = msg.partition
            if not engine.index.ready(p):
                started = time.perf_counter()
                count = engine.rebuild(p, tables.partition_items(tables.timers, p))
                # The index is millions of long-lived objects: left to the collector, a full
                # collection over them (hundreds of ms at a million timers) falls in whatever
                # runs when it triggers, a wave of firings included. Frozen, collections skip
                # them; what is garbage now is collected first, so nothing is frozen with it.
                gc.collect()
                gc.freeze()
                m.timer_index_rebuild_seconds.observe(time.perf_counter() - started)
                log.info("timer index of partition %s rebuilt: %s entities with timers", p, count)
            idle.clear()
            try:
                rows = tables.partition_rows(p)
                spent, budget = 0.0, rt.settings.max_fires_per_tick
                while budget > 0:
                    # In chunks, each chunk's firings written as soon as it is decided: the first
                    # mails of a large wave do not wait for the last timer of the partition.
                    started = time.perf_counter()
                    try:
                        fired = engine.on_tick(rows.states, rows.timers, p, now, limit=min(FIRINGS_PER_RECORD, budget))
                    finally:
                        rows.send_changelog()  # before any await: see TickRows.send_changelog
                    spent += time.perf_counter() - started
                    if fired.firings:
                        # decided_at (wall clock) is for operators and the benchmark: when these
                        # timers fired, as opposed to the tick's "now" they were judged against.
                        # Queued behind the chunk's table writes in the producer buffer, like
                        # them part of the tick's transaction (the commit waits for the buffer):
                        # awaiting the send instead waited for the broker to take the previous
                        # chunk, a round trip per hundred timers, a third of a wave's time.
                        firings.send_soon(key=None, value=firings_value(fired, time.time()), partition=p)
                    budget -= fired.entities
                    if fired.entities < FIRINGS_PER_RECORD:
                        break
                    await asyncio.sleep(0)  # the other agents' turn (a password reset) between chunks
                m.tick_seconds.observe(spent)
            finally:
                idle.set()
            m.ticks.inc()
            m.timers_pending.set(engine.index.pending())

    app.agent(ticks, name="tidings.ticks")(tick)

    async def render_firings(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            await idle.wait()
            msg = event.message
            try:
                batch = values.loads(event.value)["firings"]
            except (ValueError, KeyError, TypeError) as e:
                await dead_letter_send(msg, Rejection("render", "corrupt_firing", str(e)[:200]), msg.value or b"")
                continue
            for firing in batch:
                await idle.wait()
                started = time.perf_counter()
                try:
                    outcome = engine.render_firing(firing, rt.topics.firings)
                except Exception:
                    log.exception("rendering a firing failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                    outcome = None
                if outcome is None:
                    await dead_letter_send(msg, Rejection("render", "internal_error", "see worker log"), _firing_ref(firing))
                    continue
                if outcome.mails:
                    m.render_seconds.observe((time.perf_counter() - started) / len(outcome.mails))
                for mail in outcome.mails:
                    record = mail.record
                    await outbox.put(record, pipeline.encode(record), msg.partition)
                    m.emails_rendered.labels(record["tenant_id"], f"{record['pack']}/{record['trigger']}", mail.fallback).inc()
                await report_skipped(outbox, m, outcome.skipped, rt.clock.now(), msg.partition)
                for message_id, error in outcome.rejections:
                    rejection = Rejection("render", error.reason, error.detail, message_id or None)
                    await dead_letter_send(msg, rejection, _firing_ref(firing))

    app.agent(firings, name="tidings.firings")(render_firings)

    if rt.settings.tick_source == "internal":
        interval = rt.settings.tick_interval_seconds

        async def publish_ticks() -> None:
            value = tick_value(rt.clock.now())
            for p in range(rt.settings.partitions):
                await ticks.send(key=None, value=value, partition=p)

        app.timer(interval, on_leader=True, name="tidings.ticker")(publish_ticks)


def _firing_ref(firing: dict[str, Any]) -> bytes:
    """What the dead-letter topic keeps of a firing: which timer, never the state (least data)."""
    return values.dumps({k: firing.get(k) for k in ("table", "tenant_id", "entity_id", "timer", "fired_at")})
