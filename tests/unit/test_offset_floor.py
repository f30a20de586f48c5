"""Which offset a commit may reach when several actors share a partition
(streams/runtime/transport.py, ``TidingsConsumer._new_offset``): never past a record still in
flight, whatever the actors that finished after it acked. The consumer is Tidings' own, built on a
Faust app that never connects; acks and in-flight records are set the way Faust's ``ack`` and
stream iterator leave them. Gaps (offsets no record is delivered for, ``_add_gap``) are checked
against Faust's own method."""

from __future__ import annotations

from collections.abc import Callable

import faust
import pytest
from faust.types import TP, Message

from streams.runtime.transport import TidingsConsumer

TOPIC = "it.outbound"
TP2 = TP(TOPIC, 2)


@pytest.fixture
def consumer(offline_consumer: Callable[[str], TidingsConsumer]) -> TidingsConsumer:
    return offline_consumer("offset-floor")


def _taken(consumer: TidingsConsumer, *offsets: int) -> dict[int, Message]:
    """Records an actor took off the queue: tracked, not yet acked."""
    messages = {}
    for offset in offsets:
        m = Message(TOPIC, 2, offset, 0.0, 0, {}, b"k", b"v", None)
        consumer._unacked_messages.add(m)
        messages[offset] = m
    return messages


def _ack(consumer: TidingsConsumer, messages: dict[int, Message], *offsets: int) -> None:
    for offset in offsets:
        m = messages[offset]
        m.acked = True
        consumer._unacked_messages.discard(m)
        consumer._acked_index[TP2].add(offset)
        consumer._acked[TP2].append(offset)


def test_a_record_in_flight_holds_back_the_later_records_its_sibling_actors_acked(consumer: TidingsConsumer) -> None:
    # Nothing committed yet: Faust's own rule would commit 1..2 and pass record 0.
    messages = _taken(consumer, 0, 1, 2)
    _ack(consumer, messages, 1, 2)
    assert consumer._new_offset(TP2) is None
    _ack(consumer, messages, 0)
    assert consumer._new_offset(TP2) == 3


def test_the_commit_reaches_the_record_in_flight_and_no_further(consumer: TidingsConsumer) -> None:
    consumer._committed_offset[TP2] = 10
    messages = _taken(consumer, 10, 11, 12, 13)
    _ack(consumer, messages, 10, 12, 13)
    assert consumer._new_offset(TP2) == 11
    assert sorted(consumer._acked[TP2]) == [12, 13]  # kept for the next commit
    _ack(consumer, messages, 11)
    assert consumer._new_offset(TP2) == 14


def test_a_transaction_marker_before_the_record_in_flight_is_committed_once_the_record_is(consumer: TidingsConsumer) -> None:
    consumer._committed_offset[TP2] = 5
    messages = _taken(consumer, 5, 7, 8)
    consumer._gap[TP2].addi(6, 7)  # offset 6 is a marker: never delivered
    _ack(consumer, messages, 5, 8)
    assert consumer._new_offset(TP2) == 6  # Faust counts a gap only below the highest acked offset
    _ack(consumer, messages, 7)
    assert consumer._new_offset(TP2) == 9


def test_with_nothing_in_flight_the_rule_is_faust_s(consumer: TidingsConsumer) -> None:
    messages = _taken(consumer, 0, 1, 2, 3)
    _ack(consumer, messages, 0, 1, 2, 3)
    assert consumer._new_offset(TP2) == 4
    assert consumer._new_offset(TP2) is None  # nothing new acked


def test_records_in_flight_on_another_partition_do_not_hold_this_one(consumer: TidingsConsumer) -> None:
    consumer._unacked_messages.add(Message(TOPIC, 1, 0, 0.0, 0, {}, b"k", b"v", None))
    messages = _taken(consumer, 0, 1)
    _ack(consumer, messages, 0, 1)
    assert consumer._new_offset(TP2) == 2


# Gaps (TidingsConsumer._add_gap): kept as Faust keeps them, without Faust's rebuild of the tree at
# every gap. Each case runs the same calls through Faust's own method on a second consumer.

def _faust_gaps(consumer: TidingsConsumer, calls: list[tuple[int, int]]) -> list[tuple[int, int]]:
    for offset_from, offset_to in calls:
        # Faust's method takes the gap's last offset; Tidings' is called with the record after it.
        consumer.loop.run_until_complete(faust.transport.consumer.Consumer._add_gap(consumer, TP2, offset_from, offset_to - 1))
    return sorted((i.begin, i.end) for i in consumer._gap[TP2])


def _tidings_gaps(consumer: TidingsConsumer, calls: list[tuple[int, int]]) -> list[tuple[int, int]]:
    for offset_from, offset_to in calls:
        consumer.loop.run_until_complete(consumer._add_gap(TP2, offset_from, offset_to))
    return sorted((i.begin, i.end) for i in consumer._gap[TP2])


@pytest.fixture
def reference(offline_consumer: Callable[[str], TidingsConsumer]) -> TidingsConsumer:
    return offline_consumer("offset-floor-reference")


@pytest.mark.parametrize("calls", [
    # A marker after every record, read in order (the outbound topic behind a backlog).
    [(n * 2 + 1, n * 2 + 2) for n in range(200)],
    # Runs of several offsets with no record (markers of several transactions, compacted records).
    [(3, 7), (9, 10), (12, 20)],
    # A seek back re-reads what is already there: overlapping gaps are merged.
    [(3, 7), (9, 10), (12, 20), (4, 11), (15, 25)],
    # Records one after the other: no gap at all.
    [(5, 5), (6, 6)],
], ids=["marker-after-each-record", "runs", "seek-back-overlaps", "none"])
def test_gaps_are_kept_as_faust_keeps_them(consumer: TidingsConsumer, reference: TidingsConsumer,
                                           calls: list[tuple[int, int]]) -> None:
    assert _tidings_gaps(consumer, calls) == _faust_gaps(reference, calls)


def test_a_gap_below_the_committed_offset_is_not_kept(consumer: TidingsConsumer, reference: TidingsConsumer) -> None:
    for c in (consumer, reference):
        c._committed_offset[TP2] = 10
    calls = [(2, 5), (8, 12)]
    assert _tidings_gaps(consumer, calls) == _faust_gaps(reference, calls) == [(11, 12)]  # Faust: from committed + 1


def test_gaps_in_order_never_rebuild_the_tree(consumer: TidingsConsumer, monkeypatch: pytest.MonkeyPatch) -> None:
    merges = []
    tree = consumer._gap[TP2]
    monkeypatch.setattr(tree, "merge_overlaps", lambda *a, **k: merges.append(a))
    _tidings_gaps(consumer, [(n * 2 + 1, n * 2 + 2) for n in range(50)])
    assert merges == []
    _tidings_gaps(consumer, [(10, 30)])  # overlaps: merged
    assert len(merges) == 1


def test_a_commit_goes_over_gaps_added_in_order(consumer: TidingsConsumer) -> None:
    messages = _taken(consumer, *range(0, 20, 2))
    _tidings_gaps(consumer, [(n * 2 + 1, n * 2 + 2) for n in range(9)])
    _ack(consumer, messages, *range(0, 20, 2))
    assert consumer._new_offset(TP2) == 19
