"""Kafka's default partition of a key: the one rule every producer of an entity must follow.

Entity state, timers and the order of an entity's events all assume that every event of one
entity arrives on one partition number, across all of that entity's topics (they are
co-partitioned). That holds only if every producer, in every language, picks the partition the
same way. Tidings' contract is Kafka's default partitioner, as the Java client has it: the key is
the entity id in UTF-8, the partition is ``toPositive(murmur2(key)) % partitions``. librdkafka
(confluent-kafka, the producer kit) calls this ``murmur2_random``; its own default is CRC32-based
and disagrees for most keys.

The worker checks each keyed record against this function (``misplaced``) and counts the ones
that arrived elsewhere; it never rejects them, since the producer, not the record, is wrong.
``tests/java/vectors/partitions.json`` holds the Java client's answers for sample keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as a signed int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def default_partition(key: bytes | str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    data = key.encode("utf-8") if isinstance(key, str) else key
    # Utils.toPositive: clear the sign bit (not abs(), which differs for negative values).
    return (murmur2(data) & 0x7FFFFFFF) % partitions


def misplaced(key: bytes | str | None, partition: int, partitions: int) -> bool:
    """True when a keyed record sits on another partition than Kafka's default gives its key.

    Unkeyed records have no entity to keep together and are never misplaced.
    """
    if key is None or partitions < 1:
        return False
    return default_partition(key, partitions) != partition


class PartitionCheck:
    """The worker's side of the contract: count, and now and then say, when a producer breaks it.

    ``observe`` is called once per inbound record. A misplaced record is processed as usual (the
    entity's state on this partition may then be split from the rest of it, which is what the
    metric and the warning exist to make visible); the warning is logged at most once per topic per
    ``WARN_INTERVAL_SECONDS`` so a misconfigured producer cannot flood the log.
    """

    WARN_INTERVAL_SECONDS = 60.0

    def __init__(self, partitions: int, counter: Any, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.partitions = partitions
        self.counter = counter  # tidings_mispartitioned_events_total, labelled by topic
        self._monotonic = monotonic
        self._last_warning: dict[str, float] = {}

    def observe(self, topic: str, key: bytes | str | None, partition: int) -> bool:
        if not misplaced(key, partition, self.partitions):
            return False
        self.counter.labels(topic).inc()
        now = self._monotonic()
        last = self._last_warning.get(topic)
        if last is None or now - last >= self.WARN_INTERVAL_SECONDS:
            self._last_warning[topic] = now
            # The key is an entity id, not a secret; shortened all the same, it only has to be findable.
            shown = key[:64] if isinstance(key, str) else bytes(key[:64]).decode("utf-8", "replace")  # type: ignore[index]  # misplaced() is False for a None key
            log.warning(
                "record on %s[%d] has key %r, which Kafka's default partitioner puts on partition %d of %d: "
                "its producer does not use Kafka's default partitioner (README 'Publishing events'); "
                "further ones on this topic are only counted for %.0f s",
                topic, partition, shown, default_partition(key, self.partitions), self.partitions,  # type: ignore[arg-type]  # key not None, as above
                self.WARN_INTERVAL_SECONDS,
            )
        return True
