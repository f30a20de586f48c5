"""``FetchPacing``: what the worker's next fetch asks the broker for, after each batch and each answer (pure code).

The clock is injected; the batches are what ``urgent_first`` hands Faust (``test_urgent_fetch.py``).
"""

from __future__ import annotations

from faust.types import TP

from streams.runtime.fetchwait import IDLE_AFTER_SECONDS, FetchPacing

URGENT = frozenset({"outbound-priority"})
MAX = 200


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pacing() -> tuple[FetchPacing, Clock]:
    clock = Clock()
    return FetchPacing(65536, 10, 100, 500, 100, clock=clock), clock


def batch(topic: str, count: int, partitions: int = 4) -> dict[TP, list[str]]:
    per = [count // partitions + (1 if p < count % partitions else 0) for p in range(partitions)]
    return {TP(topic, p): [f"{topic}-{p}-{n}" for n in range(k)] for p, k in enumerate(per) if k}


def test_a_full_batch_makes_the_next_fetch_wait_longer_and_a_partial_one_steady_again() -> None:
    p, _ = pacing()
    # One byte: the fetch then holds the partitions with nothing fetched, the urgent ones among them.
    assert p.after(batch("outbound", MAX), URGENT, MAX) == (1, 100)
    assert p.after(batch("outbound", MAX - 1), URGENT, MAX) == (65536, 10)


def test_urgent_records_do_not_make_a_batch_full() -> None:
    # They come on top of the bounded batch, unbounded (urgent_first), so they say nothing of a backlog.
    p, _ = pacing()
    assert p.after({**batch("outbound-priority", 250), **batch("outbound", 1)}, URGENT, MAX) == (65536, 10)
    assert p.after(batch("outbound", MAX), URGENT, None) == (65536, 10)  # no bound asked for: never full


def test_a_worker_without_records_for_a_second_asks_for_one_byte_and_the_first_record_makes_it_steady() -> None:
    p, clock = pacing()
    assert p.after(batch("booking", 3), URGENT, MAX) == (65536, 10)
    clock.now += IDLE_AFTER_SECONDS / 2
    assert p.after({}, URGENT, MAX) == (65536, 10)  # a short lull is a steady rate's gap
    assert p.after({TP("booking", 0): []}, URGENT, MAX) == (65536, 10)  # partitions without records are nothing
    clock.now += IDLE_AFTER_SECONDS / 2
    assert p.after({}, URGENT, MAX) == (1, 500)
    clock.now += 60
    assert p.after({}, URGENT, MAX) == (1, 500)
    assert p.after(batch("booking", 1), URGENT, MAX) == (65536, 10)
    assert p.after({}, URGENT, MAX) == (65536, 10)  # the record just came: not idle yet


def test_a_new_worker_is_steady_until_a_second_has_passed() -> None:
    p, clock = pacing()
    assert p.after({}, URGENT, MAX) == (65536, 10)
    clock.now += IDLE_AFTER_SECONDS
    assert p.after({}, URGENT, MAX) == (1, 500)


def test_the_consumer_thread_waits_for_a_batch_no_longer_than_it_takes_to_notice_idleness() -> None:
    assert FetchPacing.wait_seconds(1.0) == IDLE_AFTER_SECONDS  # Faust's getmany asks for a second
    assert FetchPacing.wait_seconds(None) == IDLE_AFTER_SECONDS
    assert FetchPacing.wait_seconds(0.0) == 0.0  # a poll that must not wait still does not


def test_an_empty_answer_makes_the_next_fetch_quiet_and_one_with_records_steady_again() -> None:
    # The partitions it covered had nothing for a whole steady wait: one byte, so the first record
    # ends the next wait, and the busy wait instead of ten empty answers a tenth of a second.
    p, _ = pacing()
    assert p.fetched(False) == (1, 100)
    assert p.after(batch("outbound", 5), URGENT, MAX) == (1, 100)  # records taken from the buffers: the rest still empty
    assert p.fetched(True) == (65536, 10)
    assert p.after(batch("outbound", 5), URGENT, MAX) == (65536, 10)


def test_a_full_batch_and_idleness_decide_before_an_empty_answer() -> None:
    p, clock = pacing()
    p.fetched(False)
    assert p.after(batch("outbound", MAX), URGENT, MAX) == (1, 100)  # busy: the same one byte and wait
    assert p.fetched(True) == (1, 100)  # still behind until a batch that is not full
    assert p.after(batch("outbound", 1), URGENT, MAX) == (65536, 10)
    clock.now += IDLE_AFTER_SECONDS
    assert p.fetched(False) == (1, 500)  # no record for a fifth of a second: idle, the longer wait
    assert p.fetched(True) == (1, 500)  # records fetched but not yet taken: idle until a batch says otherwise
    assert p.after(batch("booking", 1), URGENT, MAX) == (65536, 10)


def test_a_quiet_wait_no_longer_than_the_steady_one_turns_quiet_fetches_off() -> None:
    p = FetchPacing(65536, 10, 100, 500, 10)
    assert p.fetched(False) == (65536, 10)
