"""The replay itself: the worker's handlers over in-memory tables, with nothing written anywhere.

The handlers are the worker's own (``IngestHandler``, ``TickHandler``, ``FiringsHandler``), built
from the worker's composition (``streams.app.build_runtime``) and run under the worker's guard
(``streams/runtime/guard.py``) with a ``RecordingWriter`` in place of the transactional producer:
what a handler emits is what the worker would write (but for an event mail's QUEUED status, where
``TIDINGS_QUEUED_STATUS`` asks for one: counted and not made, ``_DryRunOutbox``), and here it is
only looked at: which records went where, and each mail's fields, taken from the rendered record
the ingest handler encoded (``IngestResult.mails``) or, for a timed mail, decoded from the
outbound record. Entity state and timers live in dicts holding only the entities the range
touches. The delivery step is the sender's ledger and suppression decisions
(``report.DeliveryDecisions``), never SES.

Time: in a dry run ``now`` is fixed when the run starts ("what would these events send today").
In a simulation a virtual clock follows the records' timestamps and, between them and after the
last one up to ``until``, ticks every partition at ``step`` through the tick handler, whose
firings are rendered by the firings handler, exactly as the worker's ticks would.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from streams.delivery.outbox import DELIVERY_STATUS, OUTBOUND, OUTBOUND_PRIORITY, Emits, Outbox
from streams.domain.evaluate import field_at
from streams.domain.identity import message_id
from streams.domain.status import QUEUED
from streams.domain.status import SUPPRESSED as STATUS_SUPPRESSED
from streams.errors import RejectedInput
from streams.ingest.agents import IngestHandler
from streams.replay.records import ReplayRecord
from streams.replay.report import DEAD_LETTERED, DISABLED, STALE, SUPPRESSED, DeliveryDecisions, MailLine, mask
from streams.runtime.emit import Outputs, Pending, RecordingWriter, Source
from streams.runtime.guard import Guard
from streams.state import values
from streams.triggers.agents import FiringsHandler, TickHandler, tick_value

if TYPE_CHECKING:
    from streams.app import Runtime
    from streams.domain.rules import Catalog
    from streams.ingest.pipeline import IngestPipeline, IngestResult

log = logging.getLogger(__name__)


class ReplayAborted(Exception):
    """Something the replay depends on failed (the worker would have stopped and retried the record)."""


class VirtualClock:
    """The replay's ``Clock``: fixed in a dry run, moved by the simulation."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def now(self) -> dt.datetime:
        return self.at


class MemoryTables:
    """``runtime.tables.StateTables`` on dicts: only the entities the replay touches.

    Keys are ``<tenant>/<entity>`` and an entity stays on one partition, so one dict per table
    serves every partition; each partition's timer index starts empty and ready (``Replay.ready``),
    so ``partition_items`` (the index rebuild after a rebalance) is never needed.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.states: dict[str, dict[str, bytes]] = {name: {} for name in catalog.tables()}
        self.timers: dict[str, bytes] = {}

    def partition_items(self, table: Any, partition: int) -> Iterator[tuple[str, bytes]]:
        return iter(())

    def partition_rows(self, partition: int, source_topic: str | None = None) -> Any:
        return SimpleNamespace(states=self.states, timers=self.timers, send_changelog=lambda: 0, changes=None)

    def entities(self) -> int:
        return sum(len(t) for t in self.states.values())


class _Observed:
    """The ingest pipeline, keeping the last record's result: its stale mails and its tenant are
    reported, though the handler only counts them."""

    def __init__(self, pipeline: IngestPipeline) -> None:
        self._pipeline = pipeline
        self.last: IngestResult | None = None

    def process(self, *args: Any, **kwargs: Any) -> IngestResult:
        self.last = self._pipeline.process(*args, **kwargs)
        return self.last

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)


class _DryRunOutbox(Outbox):
    """The ingest handler's outbox in a replay: a mail's QUEUED status is counted, not encoded.

    Nothing reads it (a mail's line is made from the mail, ``Replay._collect``), and leaving it
    out cannot change what happens to the mail: emitting fails only on the broker's size limit,
    and a status is smaller than its mail, which passed that check first (the mail's first six
    fields and its ``created_at`` are the status's, plus three bytes of state and nulls; the mail
    has its subject, addresses and bodies on top). Other statuses (an inactive customer's
    SUPPRESSED, which the replay reports) are made as the worker makes them.
    """

    @classmethod
    def like(cls, outbox: Outbox) -> _DryRunOutbox:
        return cls(outbox._encode, outbox._on_status, queued_status=outbox.queued_status)

    def queued(self, ctx: Emits, record: dict[str, Any]) -> None:
        self._on_status(QUEUED)


class Unreachable:
    """In place of the SES client and the attachment store: a replay must never call either."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"tidings-replay must not reach SES or S3 ({name})")


def _place(record: Source) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def _where(record: Source | None) -> str | None:
    return None if record is None else _place(record)


def _abort(error: BaseException, where: str) -> None:
    raise ReplayAborted(f"{where}: {type(error).__name__}: {error}") from error


class Replay:
    """Feeds records through the handlers and hands one ``MailLine`` per mail to ``emit``."""

    def __init__(
        self,
        rt: Runtime,
        clock: VirtualClock,
        decisions: DeliveryDecisions,
        emit: Callable[[MailLine], None],
        *,
        show_recipients: bool = False,
        keep_bodies: bool = False,
    ) -> None:
        self.rt = rt
        self.clock = clock
        self.decisions = decisions
        self.emit = emit
        self.show_recipients = show_recipients
        self.keep_bodies = keep_bodies
        topics = rt.topics
        self.catalog = topics.catalog
        self.lanes = {topics.outbound, topics.outbound_priority}
        self.status_topic, self.dead_letter_topic, self.firings_topic = topics.delivery_status, topics.dead_letter, topics.firings
        self.ticks_topic = topics.ticks
        self.tables = MemoryTables(self.catalog)
        self.writer = RecordingWriter()
        outputs = Outputs(
            topics={OUTBOUND: topics.outbound, OUTBOUND_PRIORITY: topics.outbound_priority, DELIVERY_STATUS: topics.delivery_status},
            dead_letter_topic=topics.dead_letter,
            max_record_bytes=rt.settings.max_record_bytes,
            writer=self.writer,
            reports=frozenset({DELIVERY_STATUS}),
        )
        self.pipeline = _Observed(rt.pipeline)
        m, settings = rt.metrics, rt.settings
        self.ingest = IngestHandler(
            self.pipeline, rt.timed, self.tables, clock, m, settings.partitions,  # type: ignore[arg-type]
            queued_status=settings.queued_status,
        )
        self.ingest.outbox = _DryRunOutbox.like(self.ingest.outbox)
        self._firings: list[tuple[int, bytes]] = []
        self.tick = TickHandler(
            rt.timed, self.tables, m,  # type: ignore[arg-type]
            max_fires_per_tick=settings.max_fires_per_tick,
            max_record_bytes=settings.max_record_bytes,
            send_firings=lambda p, value: self._firings.append((p, value)),
        )
        self.render = FiringsHandler(rt.timed, rt.pipeline, m, self.tick.idle, clock, queued_status=settings.queued_status)
        self.guards = {stage: Guard(stage, outputs, on_hold=_abort) for stage in ("ingest", "tick", "render")}
        self.partitions: set[int] = set()
        self.ticked_to: dt.datetime | None = None
        self._synthetic_offset = 0
        self._at_cache: tuple[dt.datetime | None, str] = (None, "")
        self.records = 0

    # -- input --------------------------------------------------------------------------------

    def ready(self, partition: int) -> None:
        """A partition's timer index, empty and ready: the replay's state starts empty."""
        if partition not in self.partitions:
            self.partitions.add(partition)
            if not self.rt.timed.index.ready(partition):
                self.rt.timed.index.rebuild(partition, ())

    async def feed(self, record: ReplayRecord) -> None:
        """One inbound record, through the ingest handler under the guard."""
        self.ready(record.partition)
        self.records += 1
        self.pipeline.last = None
        await self.guards["ingest"](record, self.ingest)
        self._collect(self.pipeline.last, record)

    async def feed_all(self, records: Iterable[ReplayRecord], *, step: dt.timedelta | None = None,
                       on_record: Callable[[], None] = lambda: None) -> None:
        """Every record; with ``step`` (a simulation) the clock follows them and ticks between."""
        for record in records:
            if step is not None:
                at = dt.datetime.fromtimestamp(record.timestamp, dt.timezone.utc)
                await self.advance(at, step)
                if at > self.clock.at:
                    self.clock.at = at
            await self.feed(record)
            on_record()

    # -- time ---------------------------------------------------------------------------------

    async def advance(self, until: dt.datetime, step: dt.timedelta) -> int:
        """Tick every partition at each ``step`` up to ``until``; returns the ticks run.

        The first call only sets where time starts (the first record's timestamp).
        """
        if self.ticked_to is None:
            self.ticked_to = until
            self.clock.at = until
            return 0
        n = 0
        at = self.ticked_to + step
        while at <= until:
            await self.tick_all(at)
            self.ticked_to = at
            at += step
            n += 1
        return n

    async def tick_all(self, now: dt.datetime) -> None:
        """One tick on every partition at ``now``, then the firings it wrote, rendered."""
        self.clock.at = now
        value = tick_value(now)
        for p in sorted(self.partitions):
            await self.guards["tick"](self._synthetic(self.ticks_topic, p, value, now), self.tick)
            self._collect(None)
        firings, self._firings = self._firings, []
        for p, value in firings:
            await self.guards["render"](self._synthetic(self.firings_topic, p, value, now), self.render)
            self._collect(None)

    def _synthetic(self, topic: str, partition: int, value: bytes, at: dt.datetime) -> ReplayRecord:
        self._synthetic_offset += 1
        return ReplayRecord(topic=topic, partition=partition, offset=self._synthetic_offset, key=None, value=value,
                            timestamp=at.timestamp())

    # -- output -------------------------------------------------------------------------------

    def _collect(self, result: IngestResult | None, record: ReplayRecord | None = None) -> None:
        """What the handler emitted for one record, as mail lines; the writer is emptied."""
        emitted = self.writer.records
        if not emitted and result is None:
            return
        at = self._at()
        mails = {p.key for _, p in emitted if p.topic in self.lanes}
        # The mails the ingest handler rendered, as dicts: what it encoded into the outbound records
        # (``IngestHandler`` encodes ``mail.record`` unchanged), so they need not be decoded again.
        rendered = {m.record["message_id"].encode(): m.record for m in result.mails} if result is not None else {}
        for source, pending in emitted:
            if pending.topic in self.lanes:
                self._mail(pending, source, at, rendered.get(pending.key))
            elif pending.topic == self.dead_letter_topic:
                self._dead_letter(pending, _place(source), result, at)
            elif pending.topic == self.status_topic and pending.key not in mails:
                self._status(pending, _place(source), at)
        emitted.clear()
        if result is not None and result.tenant is not None and result.record is not None:
            for firing in result.stale:
                self.emit(MailLine(
                    STALE, firing.message_id, result.tenant.tenant_id, firing.trigger.key,
                    self._recipient(str(firing.recipient.get("email", ""))), reason="older than max_age",
                    at=at, source=_where(record),
                ))
            self._disabled(result, at)

    def _at(self) -> str:
        """The clock as the lines show it; formatted once per clock value, not once per line."""
        if self._at_cache[0] != self.clock.at:
            self._at_cache = (self.clock.at, self.clock.at.isoformat())
        return self._at_cache[1]

    def _recipient(self, address: str | None) -> str | None:
        return address if self.show_recipients else mask(address)

    def _mail(self, pending: Pending, source: Source, at: str, mail: dict[str, Any] | None) -> None:
        if mail is None:  # a timed mail (the firings handler's result is not observed): read it back
            mail = self.rt.codec.decode(pending.value).record
        why, reason = self.decisions(mail, self.clock.at)
        self.emit(MailLine(
            why, mail["message_id"], mail["tenant_id"], f"{mail['pack']}/{mail['trigger']}",
            self._recipient(mail["to_address"]), mail["locale"], mail["subject"], reason, _place(source), at,
            text=mail["text"] if self.keep_bodies else None, html=mail["html"] if self.keep_bodies else None,
        ))

    def _status(self, pending: Pending, where: str, at: str) -> None:
        status = self.rt.codec.decode(pending.value).record
        if status["status"] == STATUS_SUPPRESSED:  # a mail never rendered: its recipient is an inactive customer
            self.emit(MailLine(
                SUPPRESSED, status["message_id"], status["tenant_id"], f"{status['pack']}/{status['trigger']}",
                reason=status["reason"], source=where, at=at,
            ))

    def _dead_letter(self, pending: Pending, where: str, result: IngestResult | None, at: str) -> None:
        headers = {k: v.decode("utf-8", "replace") for k, v in pending.headers}
        tenant = result.tenant.tenant_id if result is not None and result.tenant is not None else None
        trigger = None
        if headers.get("tidings.source.topic") == self.firings_topic:
            try:  # a firing's dead letter names its timer: <pack>/<trigger>#<slot>
                ref = values.loads(pending.value)
                tenant, trigger = ref.get("tenant_id"), str(ref["timer"][1]).split("#", 1)[0]
            except (ValueError, KeyError, TypeError, IndexError):
                pass
        reason = headers.get("tidings.reason", "")
        detail = headers.get("tidings.detail", "")
        self.emit(MailLine(
            DEAD_LETTERED, headers.get("tidings.message_id"), tenant, trigger,
            reason=f"{reason}: {detail}" if detail else reason, source=where, at=at,
        ))

    def _disabled(self, result: IngestResult, at: str) -> None:
        """Event triggers of this event that the tenant has off (in a pack it uses): the mails they would send."""
        tenant, record = result.tenant, result.record
        assert tenant is not None and record is not None
        for trigger in self.catalog.for_event(result.event_type):
            if trigger.pack not in tenant.packs or tenant.is_enabled(trigger.key, trigger.rule.enabled_by_default):
                continue  # a pack the tenant does not use is not "off": its events are not the tenant's kind
            try:
                entity_id = str(field_at(record, trigger.rule.entity))
                occurrence = str(field_at(record, "envelope.event_id"))
                for mail in trigger.rule.mails:
                    email = str(field_at(field_at(record, mail.recipient), "email"))
                    mid = message_id(tenant_id=tenant.tenant_id, trigger=f"{trigger.key}#{mail.template}",
                                     entity_id=entity_id, occurrence=occurrence, recipient=email)
                    self.emit(MailLine(DISABLED, mid, tenant.tenant_id, trigger.key, self._recipient(email),
                                       reason="off for the tenant", at=at))
            except RejectedInput:
                continue
