"""The fast changelog restore (``streams/runtime/restore.py``): what it writes and where it stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import rocksdict
from confluent_kafka import KafkaError
from faust.types import TP

from streams.runtime.restore import PartitionTarget, read_into

OFFSET_KEY = b"__faust\0offset__"
TOPIC = "app-timers-changelog"


class FakeError:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


class FakeMessage:
    def __init__(self, partition: int, offset: int, key: bytes | None = None, value: bytes | None = None, eof: bool = False):
        self._partition, self._offset, self._key, self._value, self._eof = partition, offset, key, value, eof

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> FakeError | None:
        return FakeError() if self._eof else None


class FakeConsumer:
    """Hands out the given fetches one ``consume`` call each, then nothing."""

    def __init__(self, *fetches: list[FakeMessage]) -> None:
        self.fetches = list(fetches)
        self.assigned: list[Any] = []

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = [(p.topic, p.partition, p.offset) for p in partitions]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        return self.fetches.pop(0) if self.fetches else []


def _db(tmp_path: Path, name: str) -> rocksdict.Rdict:
    return rocksdict.Rdict(str(tmp_path / name), options=rocksdict.Options(raw_mode=True))


def _read(consumer: FakeConsumer, targets: dict[TP, PartitionTarget], seconds: float = 5.0) -> tuple[dict[TP, int], int, list[tuple[TP, int]]]:
    seen: list[tuple[TP, int]] = []
    reached, rows = read_into(consumer, targets, lambda tp, o: seen.append((tp, o)), threading.Event(), time.monotonic() + seconds)
    return reached, rows, seen


def test_records_up_to_the_end_are_written_with_the_offset_reached_and_tombstones_delete(tmp_path: Path) -> None:
    db = _db(tmp_path, "p0")
    db[b'"gone"'] = b"old"
    tp = TP(TOPIC, 0)
    consumer = FakeConsumer(
        [FakeMessage(0, 5, b'"a"', b"1"), FakeMessage(0, 6, b'"gone"', None)],
        [FakeMessage(0, 8, b'"a"', b"2"), FakeMessage(0, 9, b'"b"', b"past the end")],
    )
    reached, rows, seen = _read(consumer, {tp: PartitionTarget(start=5, end=8, db=db, offset_key=OFFSET_KEY)})
    assert consumer.assigned == [(TOPIC, 0, 5)]
    assert reached == {tp: 8} and rows == 3 and seen == [(tp, 6), (tp, 8)]
    assert db[b'"a"'] == b"2" and db.get(b'"gone"') is None and db.get(b'"b"') is None
    assert db[OFFSET_KEY] == b"8"  # what Faust's Store.persisted_offset reads


def test_an_end_of_log_past_the_end_counts_as_reached_and_short_of_it_is_left_to_faust(tmp_path: Path) -> None:
    markers, still_open = TP(TOPIC, 0), TP(TOPIC, 1)
    consumer = FakeConsumer([
        FakeMessage(0, 3, b'"a"', b"1"), FakeMessage(0, 6, eof=True),  # 4, 5: markers or aborted records
        FakeMessage(1, 2, b'"b"', b"1"), FakeMessage(1, 3, eof=True),  # an open transaction holds the LSO at 3
    ])
    reached, rows, _ = _read(consumer, {
        markers: PartitionTarget(start=0, end=5, db=_db(tmp_path, "p0"), offset_key=OFFSET_KEY),
        still_open: PartitionTarget(start=0, end=7, db=_db(tmp_path, "p1"), offset_key=OFFSET_KEY),
    })
    assert reached == {markers: 5, still_open: 2} and rows == 2


def test_a_stop_leaves_partitions_where_they_are(tmp_path: Path) -> None:
    tp = TP(TOPIC, 0)
    stop = threading.Event()
    stop.set()
    reached, rows = read_into(FakeConsumer([FakeMessage(0, 0, b'"a"', b"1")]),
                              {tp: PartitionTarget(start=0, end=3, db=_db(tmp_path, "p0"), offset_key=OFFSET_KEY)},
                              lambda tp, o: None, stop, time.monotonic() + 5)
    assert reached == {tp: -1} and rows == 0
