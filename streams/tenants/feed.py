"""Kafka side of tenant configuration: follow the tenants topic into a directory, publish to it.

``TenantFeed`` is how a worker knows its tenants. A thread with its own confluent-kafka consumer
assigns every partition of ``<prefix>tenants`` from the beginning (no consumer group, nothing
committed: every worker reads the whole topic, every time it starts), applies each record to a
``TenantDirectory`` (``streams/tenants/records.py``), and keeps following it, so a published
change reaches the next event without a restart. ``wait_caught_up`` returns once every partition
has been read to its end once; the worker waits for that before its agents consume, so no event
is judged against a half-read tenant list.

Why not a Faust ``GlobalTable`` over the topic: Faust owns a table's changelog (its name, its
serializer, when recovery counts as done) and decodes records inside its own consumer, where a
record that does not parse cannot be told apart from a table bug and is not ours to reject with a
reason. The topic is small configuration read outside the exactly-once transactions, so a plain
consumer is simpler, and its behaviour is all in this file.

The CLI uses the same feed to read the topic once (``read_tenants``) and ``publish`` /
``publish_tombstone`` to write it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from streams.errors import ConfigurationError
from streams.metrics import Metrics
from streams.tenants.model import Tenant, TenantDirectory
from streams.tenants.records import Check, Update, apply_record, encode

log = logging.getLogger(__name__)

# How long one poll blocks; bounds how long ``stop`` waits for the thread.
POLL_SECONDS = 0.5
# Rejections kept for ``tidings-tenants show``; the log has all of them.
KEEP_REJECTIONS = 100


@dataclass(frozen=True)
class Rejected:
    partition: int
    offset: int
    update: Update


class TenantFeed:
    """Keeps ``directory`` equal to the tenants topic: reads it whole, then follows it."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        directory: TenantDirectory,
        *,
        check: Check | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.directory = directory
        self.check = check
        self.metrics = metrics
        self.rejected: list[Rejected] = []
        self._caught_up = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> TenantFeed:
        self._thread = threading.Thread(target=self._run, name="tidings-tenant-feed", daemon=True)
        self._thread.start()
        return self

    def wait_caught_up(self, timeout: float) -> None:
        """Block until the topic has been read to its end once; raise if it cannot be."""
        if not self._caught_up.wait(timeout):
            raise ConfigurationError(
                f"could not read the tenants topic {self.topic} to its end within {timeout:g}s "
                "(TIDINGS_TENANTS_CATCH_UP_SECONDS)"
            )
        if self._error is not None:
            raise ConfigurationError(f"cannot read the tenants topic {self.topic}: {self._error}") from self._error

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as e:
            if self._caught_up.is_set():  # a running worker keeps its last view of the tenants
                log.exception("tenant feed on %s stopped; tenant changes are no longer applied", self.topic)
            self._error = e  # before catching up: wait_caught_up raises it
            self._caught_up.set()

    def _follow(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            # Never joins a group nor commits (partitions are assigned); librdkafka wants an id anyway.
            "group.id": f"tidings-tenant-feed-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "log_level": 4,
        })
        try:
            metadata = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            if metadata.error is not None:
                raise ConfigurationError(
                    f"{metadata.error.str()}; a worker creates it at start, tidings-tenants publish when it publishes"
                )
            partitions = sorted(metadata.partitions)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            at_end: set[int] = set()
            while not self._stopping.is_set():
                msg = consumer.poll(POLL_SECONDS)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        if not self._caught_up.is_set() and at_end >= set(partitions):
                            log.info("tenants topic %s read: %d tenants", self.topic, len(self.directory))
                            self._caught_up.set()
                    elif error.fatal():
                        raise ConfigurationError(error.str())
                    else:
                        log.warning("tenant feed on %s: %s", self.topic, error.str())
                    continue
                self._apply(msg.partition(), msg.offset(), msg.key(), msg.value())
        finally:
            consumer.close()

    def _apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        update = apply_record(self.directory, key, value, self.check)
        if update.outcome == "rejected":
            log.warning(
                "tenants topic %s[%d]@%d: ignored the record for tenant %r, the previous version stays: %s",
                self.topic, partition, offset, update.tenant_id, update.detail,
            )
            self.rejected = [*self.rejected[-(KEEP_REJECTIONS - 1):], Rejected(partition, offset, update)]
        else:
            log.info("tenants topic %s[%d]@%d: %s tenant %s", self.topic, partition, offset, update.outcome, update.tenant_id)
        if self.metrics is not None:
            self.metrics.tenant_updates.labels(update.outcome).inc()
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
    return _produce(bootstrap, topic, [encode(t) for t in tenants], timeout)


def publish_tombstone(bootstrap: str, topic: str, tenant_id: str, timeout: float = 30.0) -> None:
    """Remove a tenant: a null value under its key (compaction later drops the older records)."""
    _produce(bootstrap, topic, [(tenant_id.encode(), None)], timeout)


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]], timeout: float) -> int:
    from confluent_kafka import KafkaException, Producer

    failures: list[str] = []

    def delivered(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            failures.append(f"{msg.key()!r}: {err.str()}")

    # log_level 3: librdkafka's retry warnings are noise here; what fails is reported below.
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 3})
    try:
        for key, value in records:
            producer.produce(topic, key=key, value=value, on_delivery=delivered)
    except KafkaException as e:
        raise ConfigurationError(f"cannot write to {topic}: {e}") from e
    left = producer.flush(timeout)
    if left:
        raise ConfigurationError(f"{left} record(s) not confirmed by the broker within {timeout:.0f}s on {topic}")
    if failures:
        raise ConfigurationError(f"the broker refused records on {topic}: {'; '.join(failures)}")
    return len(records)
