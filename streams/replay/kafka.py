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
while a replay runs are not part of it. A simulation reads the partitions merged by timestamp
(``in_time_order``), so its clock never has to go back for a record another partition served late.
"""

from __future__ import annotations

import collections
import datetime as dt
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


def read_only_consumer(bootstrap: str):
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


def _watermarks(consumer, tp) -> tuple[int, int]:
    """A partition's low and high offsets, asked again while the broker says it is moving
    (``NOT_LEADER_FOR_PARTITION`` on a topic just created, a leader being elected)."""
    from confluent_kafka import KafkaError, KafkaException

    deadline = time.monotonic() + METADATA_TIMEOUT_SECONDS
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_SECONDS)
        except KafkaException as e:
            transient = e.args[0].retriable() or e.args[0].code() in (
                KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART)
            if not transient or time.monotonic() > deadline:
                raise ConfigurationError(f"cannot read the offsets of {tp.topic}[{tp.partition}]: {e.args[0].str()}") from e
            time.sleep(0.2)


def plan_spans(consumer, topics: Sequence[str], start: Bound, end: Bound) -> list[Span]:
    """The offsets to read on every partition of ``topics``; topics that do not exist are skipped."""
    from confluent_kafka import TopicPartition

    spans = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            continue
        for p in sorted(meta.partitions):
            low, high = _watermarks(consumer, TopicPartition(topic, p))

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


# A simulation needs the records in time order across partitions; at most this many are held
# waiting for a slow partition before the earliest held one goes anyway (memory stays bounded).
MAX_HELD_FOR_ORDER = 100_000

Key = tuple[str, int]
Event = tuple[Key, ReplayRecord | None]  # (topic, partition) and a record, or None: the partition is done


def _events(consumer, spans: Sequence[Span]) -> Iterator[Event]:
    """Every committed record of the spans, as the broker serves them, and each partition's end."""
    from confluent_kafka import KafkaError, TopicPartition

    ends = {(s.topic, s.partition): s.end for s in spans}
    open_parts = set(ends)
    consumer.assign([TopicPartition(s.topic, s.partition, s.start) for s in spans])
    try:
        while open_parts:
            for msg in consumer.consume(BATCH, POLL_SECONDS):
                tp = (msg.topic(), msg.partition())
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and tp in open_parts:
                        open_parts.discard(tp)  # at the end: anything later was produced after the start
                        yield tp, None
                    elif error.fatal():
                        raise ConfigurationError(error.str())
                    continue
                if tp not in open_parts:
                    continue
                if msg.offset() >= ends[tp]:
                    open_parts.discard(tp)
                    yield tp, None
                    continue
                _, ms = msg.timestamp()
                yield tp, ReplayRecord(
                    topic=tp[0], partition=tp[1], offset=msg.offset(), key=msg.key(), value=msg.value(),
                    timestamp=ms / 1000, headers=list(msg.headers() or []),
                )
                if msg.offset() >= ends[tp] - 1:
                    open_parts.discard(tp)
                    yield tp, None
    finally:
        consumer.unassign()


def in_served_order(events: Iterable[Event]) -> Iterator[ReplayRecord]:
    return (record for _, record in events if record is not None)


def in_time_order(events: Iterable[Event], partitions: Iterable[Key], max_held: int = MAX_HELD_FOR_ORDER) -> Iterator[ReplayRecord]:
    """The records merged by timestamp across partitions (each partition is in offset order).

    A record goes out once every partition still open has one held (so none can come earlier),
    or when ``max_held`` are held (then the earliest held goes: the order is approximate only
    behind a partition that lags that far).
    """
    held: dict[Key, collections.deque[ReplayRecord]] = {tp: collections.deque() for tp in partitions}
    open_parts = set(held)
    count = 0

    def earliest() -> Key:
        return min((tp for tp, q in held.items() if q), key=lambda tp: (held[tp][0].timestamp, tp))

    for tp, record in events:
        if record is None:
            open_parts.discard(tp)
        else:
            held.setdefault(tp, collections.deque()).append(record)
            count += 1
        while count and (all(held[p] for p in open_parts) or count >= max_held):
            yield held[earliest()].popleft()
            count -= 1
    while count:
        yield held[earliest()].popleft()
        count -= 1


def read_spans(consumer, spans: Sequence[Span], *, time_order: bool = False) -> Iterator[ReplayRecord]:
    """The spans' records: as the broker serves them, or merged by timestamp (simulations)."""
    if not spans:
        return iter(())
    events = _events(consumer, spans)
    return in_time_order(events, [(s.topic, s.partition) for s in spans]) if time_order else in_served_order(events)


def plan_range(bootstrap: str, topics: Sequence[str], start: Bound, end: Bound) -> list[Span]:
    """The spans of the range, planned with a consumer that is closed again (the range's end is
    fixed here: records produced later are not part of it)."""
    consumer = read_only_consumer(bootstrap)
    try:
        return plan_spans(consumer, topics, start, end)
    finally:
        consumer.close()


def read_planned(bootstrap: str, spans: Sequence[Span], *, time_order: bool = False) -> Iterator[ReplayRecord]:
    """The records of ``spans``, with a read-only consumer of their own (closed when done)."""
    consumer = read_only_consumer(bootstrap)
    try:
        yield from read_spans(consumer, spans, time_order=time_order)
    finally:
        consumer.close()


def read_range(
    bootstrap: str, topics: Sequence[str], start: Bound, end: Bound, *, time_order: bool = False
) -> tuple[int, Iterator[ReplayRecord]]:
    """``(records to read at most, the records)``: the range of ``topics`` between the bounds."""
    spans = plan_range(bootstrap, topics, start, end)
    return sum(s.size for s in spans), read_planned(bootstrap, spans, time_order=time_order)
