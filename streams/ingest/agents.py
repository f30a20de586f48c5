"""The ingest stage's handler: one inbound domain record in, its mails, state and dead letters out.

Per record: decode, apply the event triggers, render, encode each mail and check that the broker
would take it, then update the entity state and timers of the timed triggers
(``streams/triggers/engine.py``), and emit. The runtime (``streams/runtime/``) writes what was
emitted in the input's exactly-once transaction, on its partition, once the handler returns; an
exception the handler does not turn into a rejection is the guard's (``streams/runtime/guard.py``).

A mail that cannot be used (it fails to render, or is larger than the broker accepts,
``message_too_large``) is dead-lettered on its own while the event's other mails and its state
update go on: the state reflects the event, and the dead letter says which mail is missing.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from streams.codecs.partitioning import PartitionCheck
from streams.customers.feed import report_skipped
from streams.delivery.outbox import Outbox
from streams.errors import RejectedInput
from streams.ingest.pipeline import IngestPipeline, IngestResult
from streams.metrics import Series

if TYPE_CHECKING:
    from streams.clock import Clock
    from streams.metrics import Metrics
    from streams.runtime.emit import RecordContext
    from streams.runtime.tables import StateTables
    from streams.triggers.engine import TimedEngine

log = logging.getLogger(__name__)


class IngestHandler:
    """What the ingest agent does for one record; the agent itself is the runtime's."""

    def __init__(
        self,
        pipeline: IngestPipeline,
        engine: TimedEngine,
        tables: StateTables | None,
        clock: Clock,
        metrics: Metrics,
        partitions: int,
        *,
        queued_status: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.engine = engine
        self.tables = tables
        self.clock = clock
        self.m = metrics
        statuses, self._consumed, self._rendered = (Series(metrics.delivery_status_records), Series(metrics.events_consumed),
                                                    Series(metrics.emails_rendered))
        self.outbox = Outbox(pipeline.codec.encode, on_status=lambda s: statuses(s).inc(), queued_status=queued_status)
        self.partitioning = PartitionCheck(partitions, metrics.mispartitioned_events)

    async def __call__(self, ctx: RecordContext) -> None:
        msg = ctx.source
        self.partitioning.observe(msg.topic, msg.key, msg.partition)  # counted and warned, never rejected
        timestamp = dt.datetime.fromtimestamp(msg.timestamp, dt.timezone.utc)
        started = time.perf_counter()
        result = self.pipeline.process(msg.value, topic=msg.topic, timestamp=timestamp, now=self.clock.now())
        if self.tables is None and result.record is not None and self.engine.feeds(result.event_type):
            self._refuse_stateful(result, msg.topic)
        queued = []
        for mail in result.mails:
            record = mail.record
            try:
                payload = self.pipeline.encode(record)
                self.outbox.put(ctx, record, payload)
            except RejectedInput as e:
                result.rejections.append(self.pipeline.mail_rejection(e, result, record["message_id"]))
                continue
            queued.append(mail)
        if queued:
            self.m.render_seconds.observe((time.perf_counter() - started) / len(queued))
        if self.tables is not None and result.record is not None and result.tenant is not None and self.engine.feeds(result.event_type):
            # The entity state and its timers: written in this event's transaction, on its partition.
            # Straight to the partition's database, the changelog records queued as one producer
            # buffer entry (streams/runtime/tables.py PartitionRows), in the same step as the writes.
            rows = self.tables.partition_rows(ctx.partition, msg.topic)
            try:
                self.engine.on_event(rows.states, rows.timers, ctx.partition, result.event_type, result.record, result.tenant)
            except RejectedInput as e:
                result.rejections.append(self.pipeline.state_rejection(e, result))
            finally:
                rows.send_changelog()
        self._consumed(msg.topic, result.event_type).inc()
        if result.decoded is not None and result.decoded.legacy_fingerprint:
            self.m.legacy_fingerprint_events.labels(msg.topic, result.event_type).inc()
        if result.skipped:
            report_skipped(self.outbox, ctx, self.m, result.skipped, self.clock.now())
        for firing in result.stale:
            tenant_id = result.tenant.tenant_id if result.tenant is not None else ""
            self.m.mails_skipped.labels(tenant_id, firing.trigger.key, "stale").inc()
            log.info("%s: event %s[%s]@%s is older than %s's max age; not sent",
                     firing.message_id, msg.topic, msg.partition, msg.offset, firing.trigger.key)
        for mail in queued:
            record = mail.record
            self._rendered(record["tenant_id"], f"{record['pack']}/{record['trigger']}", mail.fallback).inc()
        for rejection in result.rejections:
            # A redacted copy, where the pipeline made one, in place of the original bytes.
            ctx.dead_letter(rejection)

    def _refuse_stateful(self, result: IngestResult, topic: str) -> None:
        """An event that updates an entity, on a topic of a worker without tables: dead-lettered whole.

        Its pack routes it to another topic (a producer published it to the wrong one); sending
        its mails without its state update would split the event, so none is sent. The producer
        must publish it to the right topic: a re-drive would send it back to this one.
        """
        routed = self.engine.catalog.topic_suffix_for(result.event_type)
        error = RejectedInput(
            f"{result.event_type} updates entity state, which this worker (TIDINGS_ROLE=stateless) does not keep; "
            f"it arrived on {topic}, and its pack routes it to the topic ending {routed}",
            reason="stateful_event",
        )
        result.rejections.append(self.pipeline.state_rejection(error, result))
        result.mails, result.stale, result.skipped = [], [], []
        result.record = None
