"""Faust wiring of suppression: SES events and unsubscribes in, suppression records out.

One agent reads ``<prefix>ses-events`` (SES's event-publishing JSON) and ``<prefix>unsubscribes``
(Avro ``tidings.feedback.Unsubscribed``), asks ``streams/suppression/feedback.py`` what each
record means, and writes the suppressions to the compacted ``<prefix>suppressions`` topic. Those
writes are acknowledged by the broker before the record counts as processed, and they go outside
the exactly-once transaction (see ``streams/topics.py``): a crash in between writes them again on
the next start, which is harmless, since a suppression written twice is the same suppression.
While the broker refuses them the agent retries and holds its partition, so nothing is skipped.

What cannot be used (not JSON, no tenant tag, unknown tenant, an address that is none) goes to
the dead-letter topic with a reason, on the input's partition number, in the input's transaction.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from streams.errors import ConfigurationError, RejectedInput, UnknownEventType
from streams.ingest.deadletter import send_dead_letter
from streams.ingest.pipeline import Rejection
from streams.suppression.feedback import UNSUBSCRIBE_EVENT, Feedback, ses_feedback, unsubscribe_feedback
from streams.suppression.model import Suppression, merge

if TYPE_CHECKING:
    import faust

    from streams.app import Runtime

log = logging.getLogger(__name__)

RETRY_FIRST_DELAY_SECONDS = 0.5
RETRY_MAX_DELAY_SECONDS = 30.0  # a broker back from a restart is noticed within half a minute


def register(app: faust.App, rt: Runtime) -> None:
    inputs = app.topic(
        rt.topics.ses_events, rt.topics.unsubscribes,
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    )
    dead_letter = app.topic(
        rt.topics.dead_letter, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    m = rt.metrics

    def tenant_known(tenant_id: str) -> bool:
        return rt.tenants.get(tenant_id) is not None

    def interpret(topic: str, value: bytes | None) -> Feedback:
        if topic == rt.topics.ses_events:
            return ses_feedback(value, tenant_known, rt.clock.now())
        decoded = rt.codec.decode(value)
        if decoded.type_name != UNSUBSCRIBE_EVENT:
            raise UnknownEventType(f"{decoded.type_name} on the unsubscribes topic; expected {UNSUBSCRIBE_EVENT}")
        return unsubscribe_feedback(decoded.record, tenant_known)

    async def write(entries: list[Suppression]) -> None:
        delay = RETRY_FIRST_DELAY_SECONDS
        while True:
            try:
                await asyncio.to_thread(rt.suppression_writer.suppress, entries)
                return
            except ConfigurationError as e:
                log.warning("cannot write suppressions (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY_SECONDS)

    async def feedback(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            msg = event.message
            # The label of a record that fails before its type is known.
            kind = "unknown" if msg.topic == rt.topics.ses_events else UNSUBSCRIBE_EVENT
            try:
                result = interpret(msg.topic, event.value)
            except RejectedInput as e:
                m.feedback_events.labels(kind, "dead_lettered").inc()
                await _dead_letter(Rejection("feedback", e.reason, e.detail), msg)
                continue
            except Exception:
                log.exception("feedback failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                m.feedback_events.labels(kind, "dead_lettered").inc()
                await _dead_letter(Rejection("feedback", "internal_error", "see worker log"), msg)
                continue
            # Never narrow what is held: an unsubscribe after a bounce keeps the bounce's scope.
            entries = [e for s in result.suppressions if (e := merge(rt.suppressions.get(s.tenant_id, s.address), s))]
            if entries:
                await write(entries)
            if result.invalid_recipients:
                detail = f"{result.invalid_recipients} listed recipient(s) are no email address; the others were applied"
                await _dead_letter(Rejection("feedback", "invalid_recipient", detail), msg)
            outcome = "suppressed" if result.suppressions else "ignored"
            m.feedback_events.labels(result.event_type, outcome).inc()
            if result.ignored:
                log.info("feedback %s[%s]@%s: nothing to suppress (%s)", msg.topic, msg.partition, msg.offset, result.ignored)

    async def _dead_letter(rejection: Rejection, msg) -> None:  # type: ignore[no-untyped-def]
        await send_dead_letter(dead_letter, msg, rejection, m)

    app.agent(inputs, name="tidings.feedback")(feedback)
