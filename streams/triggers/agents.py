"""The timed triggers' handlers: the tick handler and the firing renderer.

Time enters as records on the ticks topic, one per partition and interval, each carrying
``now``. Faust cannot write tables from ``@app.timer`` (DESIGN invariant 3), and a stream can:
the tick handler pops the partition's due timers from the in-memory index, revalidates them,
updates the ``timers`` table and writes firing records, all in the tick's exactly-once
transaction on that partition. The firings handler renders them into the outbound topic, like
the ingest handler renders event triggers. Splitting the two keeps a tick that finds ten
thousand due timers short: deciding is cheap, rendering is not.

Where ``now`` comes from is a setting: the leader worker's clock (``tick_source=internal``,
``streams/app.py`` publishes the ticks) or whoever publishes ticks (``external``: tests and
replays run months in seconds with ``tidings-tick``). A tick's ``now`` is the only clock the
timers see, so a replay of the ticks fires the same timers.

The index is per worker and in memory; after a rebalance every partition is rebuilt from the
``timers`` table before its next tick (``TimerIndex``). The tick that finds its partition not
ready awaits the build, which reads the table in slices of about 10 ms and lets the event loop
run the other agents in between: an event mail (a password reset) is not held up by a million
rows, only that tick is (and the ticks queued behind it: the tick agent takes one record at a
time). Both handlers run under the runtime's guard (``streams/runtime/guard.py``); neither
knows Faust.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from streams.clock import Clock, SystemClock
from streams.customers.feed import report_skipped
from streams.delivery.outbox import Outbox
from streams.errors import RejectedInput
from streams.outcomes import Rejection
from streams.runtime.emit import record_size
from streams.runtime.guard import INFRASTRUCTURE
from streams.state import values
from streams.triggers.engine import Fired, firings_value

if TYPE_CHECKING:
    from streams.codecs.avro import SingleObjectCodec
    from streams.metrics import Metrics
    from streams.runtime.emit import RecordContext
    from streams.runtime.tables import StateTables
    from streams.triggers.engine import TimedEngine

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


class TickHandler:
    """Fires one partition's due timers at a tick's ``now``.

    ``send_firings(partition, value)`` queues a firings record behind the chunk's table writes in
    the producer buffer (the runtime's ``send_soon``): part of the tick's transaction, sent
    without waiting for the broker to take the previous chunk.
    """

    def __init__(
        self,
        engine: TimedEngine,
        tables: StateTables,
        metrics: Metrics,
        *,
        max_fires_per_tick: int,
        max_record_bytes: int,
        send_firings: Callable[[int, bytes], None],
        expire_ledger: Callable[[int, dt.datetime, Any], int] | None = None,
    ) -> None:
        self.engine = engine
        self.tables = tables
        self.m = metrics
        self.max_fires_per_tick = max_fires_per_tick
        self.max_record_bytes = max_record_bytes
        self.send_firings = send_firings
        # Ticks also age the delivery ledger (runtime.tables.LedgerExpiry): its rows share the
        # tick's partition and transaction, and a tick comes every second on every partition.
        self.expire_ledger = expire_ledger
        # Set while no tick is being decided. Rendering waits for it: deciding ten thousand due
        # timers takes a fraction of a second, rendering their mails takes a minute, and sharing
        # the event loop fairly would make the last timers of a wave fire many seconds late.
        self.idle = asyncio.Event()
        self.idle.set()

    def invalidate(self) -> None:
        """Partitions moved: every index partition is rebuilt before its next tick."""
        self.engine.index.invalidate()
        self._report_index()

    def _report_index(self) -> None:
        # Both gauges at once, so that a reader who sees every partition ready also sees their
        # pending timers: a tick counted on every partition does not say so, since a partition's
        # earlier tick read again after a crash counts too while another partition still builds.
        index = self.engine.index
        self.m.timer_partitions_ready.set(index.ready_partitions())
        self.m.timers_pending.set(index.pending())

    async def __call__(self, ctx: RecordContext) -> None:
        now = parse_tick(ctx.source.value)
        p = ctx.partition
        engine = self.engine
        if not engine.index.ready(p):
            await self._build(p)
            if not engine.index.ready(p):
                # Partitions moved while it was read (``invalidate``): its rows may not be this
                # worker's any more. This tick is dropped, as a lost tick may be: the next one
                # builds again and fires what is due by its time.
                log.info("timer index build of partition %s abandoned: partitions moved", p)
                return
        self.idle.clear()
        try:
            rows = self.tables.partition_rows(p, ctx.source.topic)
            spent, budget = 0.0, self.max_fires_per_tick
            while budget > 0:
                # In chunks, each chunk's firings written as soon as it is decided: the first
                # mails of a large wave do not wait for the last timer of the partition.
                started = time.perf_counter()
                try:
                    fired = engine.on_tick(rows.states, rows.timers, p, now, limit=min(FIRINGS_PER_RECORD, budget))
                finally:
                    rows.send_changelog()  # before any await: see TickRows.send_changelog
                spent += time.perf_counter() - started
                # decided_at (wall clock) is for operators and the benchmark: when these timers
                # fired, as opposed to the tick's "now" they were judged against.
                for value in self._records(fired, time.time()):
                    self.send_firings(p, value)
                budget -= fired.entities
                if fired.entities < FIRINGS_PER_RECORD:
                    break
                await asyncio.sleep(0)  # the other agents' turn (a password reset) between chunks
            self.m.tick_seconds.observe(spent)
            if self.expire_ledger is not None:
                expired = self.expire_ledger(p, now, rows.changes)
                rows.send_changelog()
                if expired:
                    self.m.ledger_expired.inc(expired)
        finally:
            self.idle.set()
        self.m.ticks.inc()
        self._report_index()

    async def _build(self, p: int) -> None:
        started = time.perf_counter()
        count = await self.engine.build(p, self.tables.partition_items(self.tables.timers, p))
        if count is None:
            return
        # The index is millions of long-lived objects: left to the collector, a full collection
        # over them (hundreds of ms at a million timers) falls in whatever runs when it
        # triggers, a wave of firings included. Frozen, collections skip them; what is garbage
        # now is collected first, so nothing is frozen with it.
        gc.collect()
        gc.freeze()
        # Wall time, the other agents' turns between slices included: how long this partition's
        # ticks waited.
        self.m.timer_index_rebuild_seconds.observe(time.perf_counter() - started)
        self._report_index()
        log.info("timer index of partition %s rebuilt: %s entities with timers", p, count)

    def _records(self, fired: Fired, decided_at: float) -> Iterator[bytes]:
        """The chunk's firings as records the broker accepts: halved until each fits.

        A firing carries its entity's state; a hundred large states can exceed the broker's
        limit. One firing that alone is too large cannot be sent: it is counted and logged
        (its timer is done; the entity's state is what must shrink).
        """
        if not fired.firings:
            return
        value = firings_value(fired, decided_at)
        if record_size(None, value) <= self.max_record_bytes:
            yield value
            return
        if len(fired.firings) == 1:
            firing = fired.firings[0]
            trigger = firing["timer"][1].split("#", 1)[0]
            self.m.timers_skipped.labels(firing["tenant_id"], trigger, "too_large").inc()
            log.error("a firing of %s is %s bytes, over the broker's %s: not sent", trigger, len(value), self.max_record_bytes)
            return
        half = len(fired.firings) // 2
        for part in (slice(None, half), slice(half, None)):
            yield from self._records(Fired(firings=fired.firings[part], states=fired.states[part]), decided_at)


class MailEncoder(Protocol):
    """What ``FiringsHandler`` uses to encode: the outbound mail (``encode``) and, for the status
    records, the codec. ``streams.ingest.pipeline.IngestPipeline`` is one; triggers do not import ingest."""

    @property
    def codec(self) -> SingleObjectCodec: ...

    def encode(self, mail: dict[str, Any]) -> bytes: ...


class FiringsHandler:
    """Renders a firings record's mails into the outbound topics."""

    def __init__(
        self,
        engine: TimedEngine,
        pipeline: MailEncoder,
        metrics: Metrics,
        idle: asyncio.Event,
        clock: Clock | None = None,
        *,
        queued_status: bool = False,
    ) -> None:
        self.engine = engine
        self.clock = clock if clock is not None else SystemClock()
        self.pipeline = pipeline
        self.m = metrics
        self.idle = idle
        self.outbox = Outbox(
            pipeline.codec.encode, on_status=lambda s: metrics.delivery_status_records.labels(s).inc(), queued_status=queued_status
        )

    async def __call__(self, ctx: RecordContext) -> None:
        msg = ctx.source
        try:
            batch = values.loads(msg.value)["firings"]
        except (ValueError, KeyError, TypeError) as e:
            raise RejectedInput(str(e)[:200], reason="corrupt_firing") from None
        for firing in batch:
            await self.idle.wait()
            started = time.perf_counter()
            try:
                outcome = self.engine.render_firing(firing, msg.topic)
            except RejectedInput as e:
                ctx.dead_letter(Rejection("render", e.reason, e.detail), _firing_ref(firing))
                continue
            except INFRASTRUCTURE:
                raise  # the guard holds the record: a dependency failed, not this firing
            except Exception as e:
                # One firing's bug: its mails are dead-lettered, the batch's other firings go on.
                log.error("rendering a firing failed on %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, type(e).__name__)
                ctx.dead_letter(Rejection("render", "internal_error", f"{type(e).__name__} (see the worker log)"), _firing_ref(firing))
                continue
            rendered = 0
            for mail in outcome.mails:
                record = mail.record
                try:
                    self.outbox.put(ctx, record, self.pipeline.encode(record))
                except RejectedInput as e:
                    outcome.rejections.append((record["message_id"], e))
                    continue
                rendered += 1
                self.m.emails_rendered.labels(record["tenant_id"], f"{record['pack']}/{record['trigger']}", mail.fallback).inc()
            if rendered:
                self.m.render_seconds.observe((time.perf_counter() - started) / rendered)
            report_skipped(self.outbox, ctx, self.m, outcome.skipped, self.clock.now())
            for message_id, error in outcome.rejections:
                ctx.dead_letter(Rejection("render", error.reason, error.detail, message_id or None), _firing_ref(firing))


def _firing_ref(firing: dict[str, Any]) -> bytes:
    """What the dead-letter topic keeps of a firing: which timer, never the state (least data)."""
    return values.dumps({k: firing.get(k) for k in ("table", "tenant_id", "entity_id", "timer", "fired_at")})
