"""Kafka's default partitioner, reimplemented, against the Java client's own answers.

The vectors were produced by ``BuiltInPartitioner.partitionForKey`` of kafka-clients (see
``tests/java/probe.py`` to regenerate them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.codecs.partitioning import default_partition, misplaced, murmur2

VECTORS = json.loads((Path(__file__).parents[1] / "java" / "vectors" / "partitions.json").read_text(encoding="utf-8"))
CASES = [(key, int(n), p) for n, by_key in VECTORS.items() for key, p in by_key.items()]


@pytest.mark.parametrize(("key", "partitions", "expected"), CASES)
def test_same_partition_as_the_java_client(key: str, partitions: int, expected: int) -> None:
    assert default_partition(key, partitions) == expected


def test_vectors_cover_keys_that_spread() -> None:
    # A vector file where every key maps to one partition would let a constant function pass.
    assert len(set(VECTORS["12"].values())) >= 6
    assert len(CASES) >= 100


def test_murmur2_known_value_and_sign() -> None:
    # Kafka's own UtilsTest pins murmur2 of "21" (ASCII) at -973932308.
    assert murmur2(b"21") == -973932308
    assert default_partition(b"21", 1 << 31) == -973932308 & 0x7FFFFFFF


def test_misplaced() -> None:
    right = default_partition("BK-1", 6)
    assert not misplaced(b"BK-1", right, 6)
    assert misplaced(b"BK-1", (right + 1) % 6, 6)
    assert not misplaced(None, 3, 6)
    with pytest.raises(ValueError):
        default_partition("BK-1", 0)


def test_partition_check_counts_every_misplaced_record_and_warns_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import CollectorRegistry

    from streams.codecs.partitioning import PartitionCheck
    from streams.metrics import create

    registry = CollectorRegistry()
    metrics = create(registry)
    clock = [1000.0]
    check = PartitionCheck(6, metrics.mispartitioned_events, monotonic=lambda: clock[0])
    right = default_partition("BK-1", 6)
    wrong = (right + 1) % 6
    assert not check.observe("t.bookings", b"BK-1", right)
    with caplog.at_level("WARNING", logger="streams.codecs.partitioning"):
        assert check.observe("t.bookings", b"BK-1", wrong)
        assert check.observe("t.bookings", b"BK-1", wrong)
        clock[0] += PartitionCheck.WARN_INTERVAL_SECONDS
        assert check.observe("t.bookings", b"BK-1", wrong)
    assert registry.get_sample_value("tidings_mispartitioned_events_total", {"topic": "t.bookings"}) == 3
    assert len([r for r in caplog.records if "default partitioner" in r.getMessage()]) == 2
