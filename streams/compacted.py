"""Compacted topics every worker reads whole and keeps following: the tenants and the suppressions.

Both topics are small, keyed state (a tenant per id; a suppression per tenant and address) that
every worker needs all of, not a partitioned stream of work. ``TopicFollower`` is the plain
consumer thread behind both feeds: it assigns every partition of its topic from the beginning (no
consumer group, nothing committed: every worker reads the whole topic, every time it starts),
hands each record to ``apply``, and keeps following. ``wait_caught_up`` returns once every
partition has been read to its end once; a worker waits for that before its agents consume, so
nothing is judged against a half-read topic.

Why not a Faust ``GlobalTable``: Faust owns a table's changelog (its name, its serializer, when
recovery counts as done) and decodes records inside its own consumer, where a record that does not
parse cannot be told apart from a table bug and is not ours to reject with a reason. These topics
are read outside the exactly-once transactions, so a plain consumer is simpler, and its behaviour
is all in this file.

``produce_records`` writes such a topic with an idempotent producer and waits for the broker's
acknowledgement of every record, for the CLIs and for writers that must not go on before their
record is durable.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streams.errors import ConfigurationError

if TYPE_CHECKING:
    from confluent_kafka import Producer

log = logging.getLogger(__name__)

# How long one poll blocks; bounds how long ``stop`` waits for the thread.
POLL_SECONDS = 0.5


class TopicFollower:
    """Reads ``topic`` whole from the beginning in a thread, then follows it; subclasses ``apply`` records."""

    # Names the topic in messages ("tenants", "suppressions") and the thread.
    kind = "compacted"
    # What an operator runs when the topic is missing; appended to the error.
    creates_it = "a worker creates it at start"
    # The setting that bounds the catch-up wait, named in the timeout error.
    catch_up_setting = ""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._caught_up = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def apply(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        raise NotImplementedError

    def on_caught_up(self) -> None:
        """Called once, in the feed's thread, when every partition has been read to its end."""

    def start(self) -> TopicFollower:
        self._thread = threading.Thread(target=self._run, name=f"tidings-{self.kind}-feed", daemon=True)
        self._thread.start()
        return self

    def wait_caught_up(self, timeout: float) -> None:
        """Block until the topic has been read to its end once; raise if it cannot be."""
        if not self._caught_up.wait(timeout):
            setting = f" ({self.catch_up_setting})" if self.catch_up_setting else ""
            raise ConfigurationError(
                f"could not read the {self.kind} topic {self.topic} to its end within {timeout:g}s{setting}"
            )
        if self._error is not None:
            raise ConfigurationError(f"cannot read the {self.kind} topic {self.topic}: {self._error}") from self._error

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set() and self._error is None

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as e:
            if self._caught_up.is_set():  # a running worker keeps its last view of the topic
                log.exception("%s feed on %s stopped; its changes are no longer applied", self.kind, self.topic)
            self._error = e  # before catching up: wait_caught_up raises it
            self._caught_up.set()

    def _follow(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            # Never joins a group nor commits (partitions are assigned); librdkafka wants an id anyway.
            "group.id": f"tidings-{self.kind}-feed-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "log_level": 4,
        })
        try:
            metadata = consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            if metadata.error is not None:
                raise ConfigurationError(f"{metadata.error.str()}; {self.creates_it}")
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
                        at_end.add(msg.partition())  # type: ignore[arg-type]  # confluent-kafka types it Optional; set on every polled message
                        if not self._caught_up.is_set() and at_end >= set(partitions):
                            self.on_caught_up()
                            self._caught_up.set()
                    elif error.fatal():
                        raise ConfigurationError(error.str())
                    else:
                        log.warning("%s feed on %s: %s", self.kind, self.topic, error.str())
                    continue
                # confluent-kafka types partition/offset Optional (a hand-built Message); a polled record has both.
                self.apply(msg.partition(), msg.offset(), msg.key(), msg.value())  # type: ignore[arg-type]
        finally:
            consumer.close()


class AckedProducer:
    """An idempotent producer whose ``write`` returns only once the broker has every record.

    Long-lived writers (the suppression agent, the unsubscribe endpoint) keep one; ``write`` may be
    called from several threads (librdkafka's producer is thread-safe; each call waits for its own
    records' acknowledgements and reports its own failures).
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Producer | None = None  # connects on the first write, never at construction
        self._create = threading.Lock()

    def _connected(self) -> Producer:
        from confluent_kafka import Producer

        with self._create:
            if self._producer is None:
                # log_level 3: librdkafka's retry warnings are noise here; what fails is reported by write.
                self._producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "log_level": 3})
            return self._producer

    def write(self, topic: str, records: Sequence[tuple[bytes, bytes | None]], timeout: float = 30.0) -> int:
        """Write ``(key, value)`` records (a None value is a tombstone); ``ConfigurationError`` naming what failed.

        Every writer of a compacted topic goes through here, so a key always lands on the same
        partition (librdkafka's default partitioner) and a later record or tombstone of a key
        replaces the earlier one.
        """
        from confluent_kafka import KafkaException

        pending = len(records)
        failures: list[str] = []
        done = threading.Event()

        def delivered(err, msg) -> None:
            nonlocal pending
            if err is not None:
                failures.append(f"{msg.key()!r}: {err.str()}")
            pending -= 1
            if pending == 0:
                done.set()

        producer = self._connected()
        try:
            for key, value in records:
                producer.produce(topic, key=key, value=value, on_delivery=delivered)
        except KafkaException as e:
            raise ConfigurationError(f"cannot write to {topic}: {e}") from e
        deadline = time.monotonic() + timeout
        while records and not done.is_set() and time.monotonic() < deadline:
            producer.poll(0.1)  # serves the delivery callbacks
        if not done.is_set() and records:
            raise ConfigurationError(f"{pending} record(s) not confirmed by the broker within {timeout:.0f}s on {topic}")
        if failures:
            raise ConfigurationError(f"the broker refused records on {topic}: {'; '.join(failures)}")
        return len(records)

    def close(self, timeout: float = 10.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)


def produce_records(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes | None]], timeout: float = 30.0) -> int:
    """Write records once with a producer of their own (the CLIs); see ``AckedProducer.write``."""
    producer = AckedProducer(bootstrap)
    try:
        return producer.write(topic, records, timeout)
    finally:
        producer.close()
