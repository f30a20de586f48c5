"""Reading a range of topics without touching the deployment.

The reader is a plain confluent-kafka consumer that is *assigned* its partitions (``assign``, never
``subscribe``): it never joins a consumer group, so it cannot take partitions from the workers or
trigger a rebalance, and with ``enable.auto.commit=false`` and no ``commit()`` call it never
writes an offset (librdkafka wants a ``group.id`` all the same: a fresh random one, never the
deployment's). It reads ``read_committed``, as the worker does, so records of aborted
transactions are not replayed.

Where a range starts and ends (``Bound``): the beginning or the end of each partition, a time
(the first offset whose timestamp is at or after it, ``offsets_for_times``), or explicit
per-partition offsets. The end is exclusive and fixed when the read starts: records produced
while a replay runs are not part of it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from streams.errors import ConfigurationError
from streams.replay.records import ReplayRecord

POLL_SECONDS = 0.5
METADATA_TIMEOUT_SECONDS = 10.0
BATCH = 500  # records per consume() call: large enough that the client's overhead per record is small


@dataclass(frozen=True)
class Bound:
    """A range bound: a time, or per-partition offsets, or neither (the partition's start or end)."""

    at: dt.datetime | None = None
    offsets: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> Bound:
        """``2026-12-04T00:00:00Z``, ``2026-12-04`` (UTC midnight), or ``0:120,1:88`` (partition:offset)."""
        if not text:
            return cls()
        if ":" in text and "T" not in text and "-" not in text:
            try:
                pairs = (item.split(":", 1) for item in text.split(","))
                return cls(offsets={int(p): int(o) for p, o in pairs})
            except ValueError:
                raise ConfigurationError(f"{text!r}: offsets are written partition:offset[,partition:offset]") from None
        try:
            at = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigurationError(f"{text!r} is neither a time (ISO 8601) nor partition:offset pairs") from None
        return cls(at=at if at.tzinfo is not None else at.replace(tzinfo=dt.timezone.utc))


@dataclass(frozen=True)
class Span:
    topic: str
    partition: int
    start: int
    end: int  # exclusive

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def read_only_consumer(bootstrap: str):  # type: ignore[no-untyped-def]
    """A consumer that can only read: no group membership (assign only), no offset commits."""
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"tidings-replay-{uuid.uuid4().hex}",  # never used: nothing subscribes or commits
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "log_level": 3,
    })


def plan_spans(consumer, topics: Sequence[str], start: Bound, end: Bound) -> list[Span]:  # type: ignore[no-untyped-def]
    """The offsets to read on every partition of ``topics``; topics that do not exist are skipped."""
    from confluent_kafka import TopicPartition

    spans = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            continue
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=METADATA_TIMEOUT_SECONDS)

            def resolve(bound: Bound, default: int, topic: str = topic, p: int = p, low: int = low, high: int = high) -> int:
                if p in bound.offsets:
                    return min(max(bound.offsets[p], low), high)
                if bound.at is not None:
                    ms = int(bound.at.timestamp() * 1000)
                    found = consumer.offsets_for_times([TopicPartition(topic, p, ms)], timeout=METADATA_TIMEOUT_SECONDS)[0]
                    return high if found.offset < 0 else found.offset
                if bound.offsets:  # offsets named for other partitions only: this one is not in the range
                    return high
                return default

            first, last = resolve(start, low), resolve(end, high)
            if last > first:
                spans.append(Span(topic, p, first, last))
    return spans


def read_spans(consumer, spans: Sequence[Span]) -> Iterator[ReplayRecord]:  # type: ignore[no-untyped-def]
    """Every committed record of the spans, partitions interleaved as the broker serves them."""
    from confluent_kafka import KafkaError, TopicPartition

    if not spans:
        return
    ends = {(s.topic, s.partition): s.end for s in spans}
    open_parts = set(ends)
    consumer.assign([TopicPartition(s.topic, s.partition, s.start) for s in spans])
    try:
        while open_parts:
            for msg in consumer.consume(BATCH, POLL_SECONDS):
                tp = (msg.topic(), msg.partition())
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(tp)  # at the end: anything later was produced after the start
                        continue
                    if error.fatal():
                        raise ConfigurationError(error.str())
                    continue
                if tp not in open_parts:
                    continue
                if msg.offset() >= ends[tp]:
                    open_parts.discard(tp)
                    continue
                _, ms = msg.timestamp()
                yield ReplayRecord(
                    topic=tp[0], partition=tp[1], offset=msg.offset(), key=msg.key(), value=msg.value(),
                    timestamp=ms / 1000, headers=list(msg.headers() or []),
                )
                if msg.offset() >= ends[tp] - 1:
                    open_parts.discard(tp)
    finally:
        consumer.unassign()


def read_range(bootstrap: str, topics: Sequence[str], start: Bound, end: Bound) -> tuple[int, Iterator[ReplayRecord]]:
    """``(records to read at most, the records)``: the range of ``topics`` between the bounds."""
    consumer = read_only_consumer(bootstrap)
    spans = plan_spans(consumer, topics, start, end)

    def records() -> Iterator[ReplayRecord]:
        try:
            yield from read_spans(consumer, spans)
        finally:
            consumer.close()

    return sum(s.size for s in spans), records()
