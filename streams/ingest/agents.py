"""Faust wiring of the ingest stage: one agent over every inbound domain topic.

Per record: decode, apply the event triggers, render, update the entity state and timers of the
timed triggers (``streams/triggers/engine.py``), then write the mails to the outbound topic and
any rejection to the dead-letter topic. Under ``exactly_once`` those writes and the input offset are
committed in one Kafka transaction.

Every write goes to the *same partition number* as the record being processed. Faust keeps one
transaction per partition number of a co-partitioned topic group and commits it with that
partition's input offsets; a write to another partition would ride on another partition's
transaction and could be lost (or held back) while this input offset commits. See ``topics.py``. No exception escapes the loop: an unexpected one is logged
and dead-lettered as ``internal_error`` so one poisoned record never stops the stream.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from streams.codecs.partitioning import PartitionCheck
from streams.customers.feed import report_skipped
from streams.errors import RejectedInput
from streams.delivery.outbox import Outbox
from streams.ingest.deadletter import send_dead_letter
from streams.ingest.pipeline import IngestPipeline, IngestResult, Rejection

if TYPE_CHECKING:
    import faust

    from streams.app import Runtime
    from streams.state.tables import StateTables

log = logging.getLogger(__name__)


def register(app: faust.App, rt: Runtime, tables: StateTables) -> None:
    inbound = app.topic(*rt.topics.inbound, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    outbox = Outbox(app, rt)
    dead_letter = app.topic(
        rt.topics.dead_letter, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    pipeline: IngestPipeline = rt.pipeline
    engine = rt.timed
    m = rt.metrics
    partitioning = PartitionCheck(rt.settings.partitions, m.mispartitioned_events)

    async def ingest(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            msg = event.message
            partitioning.observe(msg.topic, msg.key, msg.partition)  # counted and warned, never rejected
            timestamp = dt.datetime.fromtimestamp(msg.timestamp, dt.timezone.utc)
            try:
                started = time.perf_counter()
                result = pipeline.process(event.value, topic=msg.topic, timestamp=timestamp, now=rt.clock.now())
                payloads = [(mail, pipeline.encode(mail.record)) for mail in result.mails]
                if result.mails:
                    m.render_seconds.observe((time.perf_counter() - started) / len(result.mails))
            except Exception:
                log.exception("ingest failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                result, payloads = IngestResult(rejections=[Rejection("ingest", "internal_error", "see worker log")]), []
            if result.record is not None and result.tenant is not None and engine.feeds(result.event_type):
                # The entity state and its timers: written in this event's transaction, on its partition.
                try:
                    engine.on_event(tables.states, tables.timers, msg.partition, result.event_type, result.record, result.tenant)
                except RejectedInput as e:
                    result.rejections.append(pipeline.state_rejection(e, result))
                except Exception:
                    log.exception("state update failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                    result.rejections.append(Rejection("state", "internal_error", "see worker log"))
            m.events_consumed.labels(msg.topic, result.event_type).inc()
            if result.decoded is not None and result.decoded.legacy_fingerprint:
                m.legacy_fingerprint_events.labels(msg.topic, result.event_type).inc()
            for mail, payload in payloads:
                record = mail.record
                await outbox.put(record, payload, msg.partition)
                m.emails_rendered.labels(record["tenant_id"], f"{record['pack']}/{record['trigger']}", mail.fallback).inc()
            await report_skipped(outbox, m, result.skipped, rt.clock.now(), msg.partition)
            for rejection in result.rejections:
                # A redacted copy, where the pipeline made one, in place of the original bytes.
                await send_dead_letter(dead_letter, msg, rejection, m, value=rejection.replacement)

    app.agent(inbound, name="tidings.ingest")(ingest)

    # Faust only writes to a topic inside the exactly-once transaction when its consumer has
    # metadata for that topic, i.e. when some agent subscribes to it; otherwise the send silently
    # goes through the plain producer. This agent subscribes the dead-letter topic for that
    # reason, and reads it back for the dead-letter backlog metric.
    async def audit_dead_letters(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            headers = dict(event.message.headers or ())
            reason = headers.get("tidings.reason", b"unknown").decode("ascii", "replace")[:64]
            m.dead_letter_topic_records.labels(reason).inc()

    app.agent(dead_letter, name="tidings.dead_letter_audit")(audit_dead_letters)
