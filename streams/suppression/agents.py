"""The feedback handler of suppression: SES events and unsubscribes in, suppression records out.

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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streams.errors import ConfigurationError, UnknownEventType
from streams.outcomes import Rejection
from streams.suppression.feedback import UNSUBSCRIBE_EVENT, Feedback, ses_feedback, unsubscribe_feedback
from streams.suppression.model import Suppression, merge

if TYPE_CHECKING:
    from streams.clock import Clock
    from streams.domain.tenants import TenantDirectory
    from streams.metrics import Metrics
    from streams.runtime.emit import RecordContext
    from streams.suppression.feed import SuppressionWriter
    from streams.suppression.model import SuppressionList

log = logging.getLogger(__name__)

RETRY_FIRST_DELAY_SECONDS = 0.5
RETRY_MAX_DELAY_SECONDS = 30.0  # a broker back from a restart is noticed within half a minute


class FeedbackHandler:
    """Turns one SES event or unsubscribe into suppressions (written before the record is done)."""

    def __init__(
        self,
        *,
        ses_events_topic: str,
        decode: Callable[[bytes | None], Any],
        tenants: TenantDirectory,
        suppressions: SuppressionList,
        writer: SuppressionWriter,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.ses_events_topic = ses_events_topic
        self.decode = decode
        self.tenants = tenants
        self.suppressions = suppressions
        self.writer = writer
        self.m = metrics
        self.clock = clock

    def _tenant_known(self, tenant_id: str) -> bool:
        return self.tenants.get(tenant_id) is not None

    def _interpret(self, topic: str, value: bytes | None) -> Feedback:
        if topic == self.ses_events_topic:
            return ses_feedback(value, self._tenant_known, self.clock.now())
        decoded = self.decode(value)
        if decoded.type_name != UNSUBSCRIBE_EVENT:
            raise UnknownEventType(f"{decoded.type_name} on the unsubscribes topic; expected {UNSUBSCRIBE_EVENT}")
        return unsubscribe_feedback(decoded.record, self._tenant_known)

    async def _write(self, entries: list[Suppression]) -> None:
        delay = RETRY_FIRST_DELAY_SECONDS
        while True:
            try:
                await asyncio.to_thread(self.writer.suppress, entries)
                return
            except ConfigurationError as e:
                log.warning("cannot write suppressions (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY_SECONDS)

    async def __call__(self, ctx: RecordContext) -> None:
        msg = ctx.source
        # The label of a record that fails before its type is known.
        kind = "unknown" if msg.topic == self.ses_events_topic else UNSUBSCRIBE_EVENT
        try:
            result = self._interpret(msg.topic, msg.value)
        except Exception:
            self.m.feedback_events.labels(kind, "dead_lettered").inc()
            raise  # the guard dead-letters it: its reason, or internal_error
        # Never narrow what is held: an unsubscribe after a bounce keeps the bounce's scope.
        entries = [e for s in result.suppressions if (e := merge(self.suppressions.get(s.tenant_id, s.address), s))]
        if entries:
            await self._write(entries)
        if result.invalid_recipients:
            detail = f"{result.invalid_recipients} listed recipient(s) are no email address; the others were applied"
            ctx.dead_letter(Rejection("feedback", "invalid_recipient", detail))
        outcome = "suppressed" if result.suppressions else "ignored"
        self.m.feedback_events.labels(result.event_type, outcome).inc()
        if msg.topic == self.ses_events_topic:
            for tenant_id in sorted({s.tenant_id for s in result.suppressions}):
                self.m.ses_feedback.labels(tenant_id, result.event_type).inc()
        if result.ignored:
            log.info("feedback %s[%s]@%s: nothing to suppress (%s)", msg.topic, msg.partition, msg.offset, result.ignored)
