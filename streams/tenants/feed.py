"""Kafka side of tenant configuration: follow the tenants topic into a directory, publish to it.

``TenantFeed`` is how a worker knows its tenants: a ``TopicFollower`` (``streams/compacted.py``:
a plain consumer thread that reads the whole topic from the beginning, then follows it) that
applies each record of ``<prefix>tenants`` to a ``TenantDirectory`` (``streams/tenants/records.py``),
so a published change reaches the next event without a restart. No record stops it: one that
cannot be applied, for whatever reason, is logged, counted in ``tidings_tenant_records_rejected_total``
by reason, and the tenant's previous version stays. The worker waits for
``wait_caught_up`` before its agents consume, so no event is judged against a half-read tenant list.

The CLI uses the same feed to read the topic once (``read_tenants``) and ``publish`` /
``publish_tombstone`` to write it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from streams.compacted import TopicFollower, produce_records
from streams.domain.tenants import Tenant, TenantDirectory
from streams.metrics import Metrics
from streams.tenants.records import Check, Update, apply_record, encode

log = logging.getLogger(__name__)

# Rejections kept for ``tidings-tenants show``; the log has all of them.
KEEP_REJECTIONS = 100


@dataclass(frozen=True)
class Rejected:
    partition: int
    offset: int
    update: Update


class TenantFeed(TopicFollower):
    """Keeps ``directory`` equal to the tenants topic: reads it whole, then follows it."""

    kind = "tenants"
    creates_it = "a worker creates it at start, tidings-tenants publish when it publishes"
    catch_up_setting = "TIDINGS_TENANTS_CATCH_UP_SECONDS"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        directory: TenantDirectory,
        *,
        check: Check | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(bootstrap, topic)
        self.directory = directory
        self.check = check
        self.metrics = metrics
        self.rejected: list[Rejected] = []

    def start(self) -> TenantFeed:
        super().start()
        return self

    def on_caught_up(self) -> None:
        log.info("tenants topic %s read: %d tenants", self.topic, len(self.directory))

    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Apply one record; never raises, so no record can stop the feed (``apply_record`` rejects what it cannot use)."""
        try:
            update = apply_record(self.directory, key, value, self.check)
        except Exception as e:  # noqa: BLE001 - apply_record does not raise; this guards the thread against its bugs
            update = Update("rejected", None, f"could not be applied: {type(e).__name__}", "check_failed")
        if update.outcome == "rejected":
            log.warning(
                "tenants topic %s[%d]@%d: ignored the record for tenant %r (%s), the previous version stays: %s",
                self.topic, partition, offset, update.tenant_id, update.reason, update.detail,
            )
            self.rejected = [*self.rejected[-(KEEP_REJECTIONS - 1):], Rejected(partition, offset, update)]
        else:
            log.info("tenants topic %s[%d]@%d: %s tenant %s", self.topic, partition, offset, update.outcome, update.tenant_id)
        if self.metrics is not None:
            self.metrics.tenant_updates.labels(update.outcome).inc()
            if update.outcome == "rejected":
                self.metrics.tenant_records_rejected.labels(update.reason).inc()
            self.metrics.tenants_loaded.set(len(self.directory))


def read_tenants(bootstrap: str, topic: str, *, check: Check | None = None, timeout: float = 30.0) -> TenantFeed:
    """Read the whole topic once; the feed's ``directory`` and ``rejected`` say what it holds."""
    feed = TenantFeed(bootstrap, topic, TenantDirectory(), check=check).start()
    try:
        feed.wait_caught_up(timeout)
    finally:
        feed.stop()
    return feed


def publish(bootstrap: str, topic: str, tenants: Iterable[Tenant], timeout: float = 30.0) -> int:
    """Write one record per tenant and wait until the broker has them all; returns the count."""
    return produce_records(bootstrap, topic, [encode(t) for t in tenants], timeout)


def publish_tombstone(bootstrap: str, topic: str, tenant_id: str, timeout: float = 30.0) -> None:
    """Remove a tenant: a null value under its key (compaction later drops the older records)."""
    produce_records(bootstrap, topic, [(tenant_id.encode(), None)], timeout)
