"""Watch an output topic: note when each record became visible, and turn that into figures.

A background thread polls a ``read_committed`` consumer assigned to every partition of the topic
from the beginning, and notes for each record the wall-clock time it arrived, its own Kafka
timestamp and its bytes (decoding waits until the run is over, to keep the thread light).

Latency of one record is measured against the inbound record's Kafka timestamp, which both
pipelines copy into the outbound Avro body as ``source_timestamp``:

- *visible*: arrival at this consumer minus ``source_timestamp``. Under exactly-once this includes
  the wait for the transaction to commit, which is what a downstream reader experiences.
- *stamped*: the outbound record's own Kafka timestamp (set when it was produced, before any
  commit) minus ``source_timestamp``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.codecs.avro import SingleObjectCodec

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Arrival:
    received_at: float  # time.time() when the consumer handed it over
    kafka_timestamp_ms: int
    value: bytes


class OutboundReader:
    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.topic = topic
        self.arrivals: list[Arrival] = []
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        })
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._thread = threading.Thread(target=self._run, name=f"reader-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for msg in self._consumer.consume(num_messages=1000, timeout=POLL_SECONDS):
                    received_at = time.time()
                    if msg.error() is not None:
                        self._errors.append(str(msg.error()))
                        continue
                    self.arrivals.append(Arrival(received_at, msg.timestamp()[1], msg.value()))
        finally:
            self._consumer.close()

    def wait_for(self, count: int, *, timeout: float, check: Callable[[], None], what: str) -> None:
        """Until ``count`` records arrived; ``check`` raises if the process under test died."""
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < count:
            check()
            if self._errors:
                raise AssertionError(f"consumer of {self.topic} failed: {self._errors[:3]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what}: {len(self.arrivals)}/{count} records on {self.topic}"
                )
            time.sleep(POLL_SECONDS)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass(frozen=True)
class Figures:
    events: int
    records: int
    seconds: float  # first publish to last record visible
    events_per_second: float
    p50_ms: float
    p99_ms: float
    stamped_p50_ms: float
    stamped_p99_ms: float


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def figures(arrivals: list[Arrival], codec: SingleObjectCodec, *, started_at: float, events: int) -> tuple[Figures, list[dict]]:
    """The figures of one timed run, and the decoded outbound records (for the sanity checks)."""
    records = [codec.decode(a.value).record for a in arrivals]
    sources = [r["source_timestamp"].timestamp() for r in records]
    visible = [(a.received_at - s) * 1000 for a, s in zip(arrivals, sources, strict=True)]
    stamped = [(a.kafka_timestamp_ms / 1000 - s) * 1000 for a, s in zip(arrivals, sources, strict=True)]
    seconds = max(a.received_at for a in arrivals) - started_at
    return Figures(
        events=events,
        records=len(arrivals),
        seconds=round(seconds, 3),
        events_per_second=round(events / seconds, 1),
        p50_ms=round(percentile(visible, 50), 1),
        p99_ms=round(percentile(visible, 99), 1),
        stamped_p50_ms=round(percentile(stamped, 50), 1),
        stamped_p99_ms=round(percentile(stamped, 99), 1),
    ), records
