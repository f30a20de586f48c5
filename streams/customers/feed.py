"""Kafka side of the inactive customers: every worker reads the customers topic whole, then follows it.

A ``TopicFollower`` (``streams/compacted.py``) like the tenants and suppressions feeds, but over a
domain topic: its records are Avro events in the topic's wire format, decoded with the worker's
own decoders. A record that does not decode, or is no status event, changes nothing here (the
ingest agent, which reads the same topic, dead-letters what it cannot use, so it is not reported
twice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from streams.compacted import TopicFollower
from streams.domain.customers import REASON, InactiveCustomers
from streams.domain.status import SUPPRESSED
from streams.errors import RejectedInput, TidingsError

log = logging.getLogger(__name__)


class CustomerStatusFeed(TopicFollower):
    """Keeps ``inactive`` equal to what the customers topic says."""

    kind = "customers"
    creates_it = "a worker creates it at start (it is a pack topic)"
    catch_up_setting = "TIDINGS_TENANTS_CATCH_UP_SECONDS"

    def __init__(
        self, bootstrap: str, topic: str, inactive: InactiveCustomers, decode: Callable[[str, bytes | None], Any],
        *, gauge: Any = None,
    ) -> None:
        super().__init__(bootstrap, topic)
        self.inactive = inactive
        self._decode = decode
        self._gauge = gauge  # tidings_inactive_customers

    def start(self) -> CustomerStatusFeed:
        super().start()
        return self

    def on_caught_up(self) -> None:
        log.info("customers topic %s read: %d inactive customers", self.topic, len(self.inactive))

    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        try:
            decoded = self._decode(self.topic, value)
        except RejectedInput:
            return
        except TidingsError as e:  # a registry that does not answer: keep the last view, say so
            log.warning("customers topic %s[%d]@%d not applied: %s", self.topic, partition, offset, e)
            return
        self.inactive.apply(decoded.type_name, decoded.record)
        if self._gauge is not None:
            self._gauge.set(len(self.inactive))


def report_skipped(outbox: Any, ctx: Any, metrics: Any, skipped: list[dict[str, Any]], at: Any) -> None:
    """Each mail skipped for an inactive customer: a SUPPRESSED status in the input's transaction, and counted."""
    for mail in skipped:
        outbox.status(ctx, mail, SUPPRESSED, at, reason=REASON)
        metrics.mails_suppressed.labels(mail["tenant_id"], REASON).inc()


def customer_feeds(bootstrap: str, topics: Any, decoders: Any, inactive: InactiveCustomers, metrics: Any) -> tuple[CustomerStatusFeed, ...]:
    """One feed per inbound topic that carries customer status events (charging.customers today)."""
    from streams.domain.customers import is_status_event

    carrying = sorted({topics.for_event(t) for t in topics.catalog.event_types() if is_status_event(t)})
    return tuple(
        CustomerStatusFeed(bootstrap, topic, inactive, decoders.decode, gauge=metrics.inactive_customers) for topic in carrying
    )
