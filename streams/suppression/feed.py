"""Kafka side of the suppression list: every worker follows ``<prefix>suppressions``; writers publish to it.

``SuppressionFeed`` is a ``TopicFollower`` (``streams/compacted.py``) applying each record to the
worker's ``SuppressionList``: read whole before the worker sends anything, then followed, so a
bounce recorded by any worker stops the next mail on every worker. A record that cannot be used
(no key, not JSON, nested too deeply, a key that does not match its value: any failure) is logged
and counted (``tidings_suppression_records_total{outcome="rejected", reason=...}``), changes
nothing, and the feed goes on.

``SuppressionWriter`` publishes suppressions and lifts, acknowledged by the broker before it
returns; the agent, the unsubscribe endpoint and ``tidings-suppress`` use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from streams.compacted import AckedProducer, TopicFollower
from streams.metrics import Metrics
from streams.suppression.model import Suppression, SuppressionList, Update, record_key

log = logging.getLogger(__name__)


class SuppressionFeed(TopicFollower):
    """Keeps ``entries`` equal to the suppressions topic: reads it whole, then follows it."""

    kind = "suppressions"
    creates_it = "a worker creates it at start, tidings-suppress when it writes"
    catch_up_setting = "TIDINGS_SUPPRESSIONS_CATCH_UP_SECONDS"

    def __init__(self, bootstrap: str, topic: str, entries: SuppressionList, *, metrics: Metrics | None = None) -> None:
        super().__init__(bootstrap, topic)
        self.entries = entries
        self.metrics = metrics
        self.rejected = 0

    def start(self) -> SuppressionFeed:
        super().start()
        return self

    def on_caught_up(self) -> None:
        log.info("suppressions topic %s read: %d suppressed addresses", self.topic, len(self.entries))

    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Apply one record; never raises, so no record can stop the feed."""
        try:
            update = self.entries.apply_record(key, value)
        except Exception as e:  # noqa: BLE001 - apply_record does not raise; this guards the thread against its bugs
            update = Update("rejected", "check_failed", f"could not be applied: {type(e).__name__}")
        if update.outcome == "rejected":
            self.rejected += 1
            log.warning("suppressions topic %s[%d]@%d: ignored a record: %s", self.topic, partition, offset, update.detail)
        if self.metrics is not None:
            self.metrics.suppression_records.labels(update.outcome, update.reason).inc()
            self.metrics.suppression_entries.set(len(self.entries))


def read_suppressions(bootstrap: str, topic: str, timeout: float = 30.0) -> SuppressionFeed:
    """Read the whole topic once; the feed's ``entries`` say what it holds."""
    feed = SuppressionFeed(bootstrap, topic, SuppressionList()).start()
    try:
        feed.wait_caught_up(timeout)
    finally:
        feed.stop()
    return feed


class SuppressionWriter:
    """Writes suppressions and lifts to the suppressions topic; each call returns once the broker has them."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._producer = AckedProducer(bootstrap)

    def suppress(self, entries: Sequence[Suppression], timeout: float = 30.0) -> None:
        self._producer.write(self.topic, [s.encode() for s in entries], timeout)

    def lift(self, tenant_id: str, address: str, timeout: float = 30.0) -> None:
        """A tombstone: the address may be mailed again (compaction later drops the older records)."""
        self._producer.write(self.topic, [(record_key(tenant_id, address), None)], timeout)

    def publish_raw(self, topic: str, key: bytes, value: bytes, timeout: float = 30.0) -> None:
        """Any other record through the same producer (the endpoint's Unsubscribed events)."""
        self._producer.write(topic, [(key, value)], timeout)

    def close(self) -> None:
        self._producer.close()
