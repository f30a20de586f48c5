from __future__ import annotations

import asyncio
import bisect
import random
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from streams.delivery.pacing import (
    BUCKET_BOUND,
    OVERSLEEP_TOLERANCE_SECONDS,
    WRITE_GATED,
    Pacer,
    PriorityLanes,
    TokenBucket,
    WireGate,
    cap_for,
    ses_shape,
)

T = TypeVar("T")
EPS = 1e-6  # float slack when comparing simulated times


class FakeTime:
    """A monotonic clock that moves only when the code under test sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def most_in_window(stamps: list[float], length: float, *, closed: bool) -> int:
    """The largest number of stamps in any window [s, s + length] (or [s, s + length))."""
    edge = length + EPS if closed else length - EPS
    return max(bisect.bisect_right(stamps, s + edge) - i for i, s in enumerate(stamps))


# --- TokenBucket


class LateTime(FakeTime):
    """A fake clock whose sleeps overrun, as a busy event loop's do, by up to ``late`` seconds."""

    def __init__(self, late: float, seed: int) -> None:
        super().__init__()
        self.late, self.random = late, random.Random(seed)

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self.random.uniform(0, self.late))


@pytest.mark.parametrize("quota", [1, 14, 50, 200, 1000])
def test_a_bucket_shaped_for_the_quota_never_exceeds_it_in_a_second_and_loses_nothing_to_late_wakeups(quota: int) -> None:
    t = LateTime(OVERSLEEP_TOLERANCE_SECONDS, seed=quota)
    bucket = TokenBucket.for_quota(quota, clock=t, sleep=t.sleep)
    seconds = 20

    async def main() -> list[float]:
        stamps: list[float] = []
        while t.now <= seconds:
            await bucket.acquire()
            stamps.append(t.now)
        return stamps[:-1]

    stamps = run(main())
    assert most_in_window(stamps, 1.0, closed=True) <= quota
    # ... even where the requests drift apart on their way to SES by up to the jitter allowance
    assert most_in_window(stamps, 1.0 + BUCKET_BOUND.jitter, closed=False) <= quota
    # the late wakeups cost no sends: the rate is what ses_shape chose
    assert (len(stamps) - 1) / (stamps[-1] - stamps[0]) >= 0.999 * ses_shape(quota)[0]


@pytest.mark.parametrize("late", [OVERSLEEP_TOLERANCE_SECONDS, WRITE_GATED.catch_up])
@pytest.mark.parametrize("quota", [1, 14, 50, 200, 1000])
def test_a_write_gated_sender_keeps_every_second_to_the_quota_and_makes_up_late_wakeups(quota: int, late: float) -> None:
    # The lean client's layers: the bucket at the gate's sustained rate with a catch-up burst, then
    # the gate at the write. Every sleep, the bucket's and the gate's, wakes up to ``late`` late.
    t = LateTime(late, seed=quota)
    bucket = TokenBucket.for_quota(quota, WRITE_GATED, clock=t, sleep=t.sleep)
    gate = WireGate.for_quota(quota, WRITE_GATED, clock=t, sleep=t.sleep)
    seconds = 30

    async def main() -> list[float]:
        stamps: list[float] = []
        while t.now <= seconds:
            await bucket.acquire()
            stamps.append(await gate.admit())
        return stamps[:-1]

    stamps = run(main())
    # writes that drift by up to the jitter on their way still arrive at most the quota in a second
    assert most_in_window(stamps, WRITE_GATED.gate_window, closed=False) <= quota
    achieved = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert achieved <= quota / WRITE_GATED.gate_window + 1e-6
    if late <= OVERSLEEP_TOLERANCE_SECONDS:
        # issue 17 asks 0.98 of the quota: the wakeups a loop usually adds cost (almost) nothing.
        # Every sleep up to the whole catch-up late costs the gate's own sleeps about 3 %.
        assert achieved >= 0.985 * quota


def test_a_write_gated_bucket_runs_at_its_gates_sustained_rate() -> None:
    for quota in (0.5, 1, 14, 50, 200, 1000, 14_000):
        rate, burst = ses_shape(quota, WRITE_GATED)
        assert rate == pytest.approx(min(quota, cap_for(quota)) / WRITE_GATED.gate_window, abs=1e-5)
        assert burst == pytest.approx(1 + quota * WRITE_GATED.catch_up)
    # the bucket alone would not hold the quota: the gate does (the test above)
    rate, burst = ses_shape(200, WRITE_GATED)
    assert rate * WRITE_GATED.gate_window + burst > 200 + 1


def test_a_bucket_of_burst_one_loses_the_time_its_waiters_oversleep() -> None:
    # Why ses_shape saves a little burst: the same late wakeups at burst 1 cost about 5 %.
    t = LateTime(0.002, seed=1)
    bucket = TokenBucket(49, 1, clock=t, sleep=t.sleep)

    async def main() -> int:
        n = 0
        while t.now <= 20:
            await bucket.acquire()
            n += 1
        return n

    assert run(main()) / 20 < 0.97 * 49


def test_ses_shape_keeps_rate_plus_burst_under_quota_plus_one() -> None:
    for quota in (0.5, 1, 50, 200, 1000, 14_000):
        rate, burst = ses_shape(quota)
        assert burst >= 1 and rate > 0.96 * quota - 1e-3  # at most the allowances under the quota
        assert rate * (1 + BUCKET_BOUND.jitter) + burst < quota + 1
    with pytest.raises(ValueError):
        ses_shape(0)


@pytest.mark.parametrize("burst", [1, 50])
def test_bucket_admits_exactly_rate_times_t_plus_burst_over_ten_simulated_seconds(burst: int) -> None:
    t = FakeTime()
    bucket = TokenBucket(50, burst, clock=t, sleep=t.sleep)

    async def main() -> list[float]:
        stamps: list[float] = []
        while True:
            await bucket.acquire()
            if t.now > 10 + EPS:
                return stamps
            stamps.append(t.now)

    stamps = run(main())
    assert len(stamps) == 50 * 10 + burst
    for length in (0.1, 0.5, 1.0, 3.0, 10.0):
        assert most_in_window(stamps, length, closed=True) <= 50 * length + burst
    if burst == 1:
        assert most_in_window(stamps, 1.0, closed=False) == 50  # never above the rate in any second


def test_a_new_rate_applies_from_the_moment_it_is_set() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, clock=t, sleep=t.sleep)

    async def stamps(count: int) -> list[float]:
        out = []
        for _ in range(count):
            await bucket.acquire()
            out.append(t.now)
        return out

    first = run(stamps(11))  # the full bucket's token, then ten at 10/s
    assert first[-1] == pytest.approx(1.0)
    bucket.set_rate(40)  # the worker's share grew after a rebalance
    second = run(stamps(40))
    assert second[-1] - first[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bucket.set_rate(0)


def test_burst_is_available_after_idling_and_no_more() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, 5, clock=t, sleep=t.sleep)

    async def take(count: int) -> None:
        for _ in range(count):
            await bucket.acquire()

    run(take(5))
    assert t.slept == []  # a new bucket is full
    run(take(1))
    assert t.slept == [pytest.approx(0.1)]
    t.now += 100  # idle far longer than it takes to refill
    t.slept.clear()
    run(take(5))
    assert t.slept == []
    run(take(1))
    assert t.slept == [pytest.approx(0.1)]  # the idle time saved up only `burst` tokens


def test_acquire_of_several_tokens_and_more_than_the_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, 3, clock=t, sleep=t.sleep)
    run(bucket.acquire(3))
    run(bucket.acquire(2))
    assert t.now == pytest.approx(0.2)
    with pytest.raises(ValueError, match="at most 3"):
        run(bucket.acquire(4))


def test_a_cancelled_waiter_takes_no_tokens() -> None:
    t = FakeTime()
    asleep = asyncio.Event()

    async def sleep_forever(seconds: float) -> None:
        asleep.set()
        await asyncio.Event().wait()

    bucket = TokenBucket(1, 2, clock=t, sleep=sleep_forever)

    async def main() -> None:
        await bucket.acquire(2)  # empty now
        waiter = asyncio.create_task(bucket.acquire(2))
        await asleep.wait()
        t.now += 2.0  # the tokens it waited for have arrived...
        waiter.cancel()  # ...but it is cancelled before it wakes up
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert bucket.available() == pytest.approx(2.0)
        await asyncio.wait_for(bucket.acquire(2), timeout=1)  # lock released, tokens still there

    run(main())


# --- PriorityLanes


def test_high_item_behind_ten_thousand_bulk_items_is_served_next() -> None:
    async def main() -> None:
        lanes: PriorityLanes[str] = PriorityLanes(20_000)
        for i in range(10_000):
            lanes.put_nowait(f"bulk-{i}", "bulk")
        lanes.put_nowait("normal-0", "normal")
        await lanes.put("reset-password", "high")
        assert await lanes.get() == "reset-password"
        assert await lanes.get() == "normal-0"
        assert [await lanes.get() for _ in range(10_000)] == [f"bulk-{i}" for i in range(10_000)]  # FIFO
        assert lanes.qsize() == 0

    run(main())


def test_full_lane_applies_backpressure_to_that_lane_only() -> None:
    async def main() -> None:
        lanes: PriorityLanes[int] = PriorityLanes({"high": 1, "normal": 2, "bulk": 2})
        await lanes.put(1, "bulk")
        await lanes.put(2, "bulk")
        blocked = asyncio.create_task(lanes.put(3, "bulk"))
        await settle()
        assert not blocked.done()
        with pytest.raises(asyncio.QueueFull):
            lanes.put_nowait(3, "bulk")
        await asyncio.wait_for(lanes.put(10, "high"), timeout=1)  # other lanes are not blocked
        assert await lanes.get() == 10
        assert await lanes.get() == 1
        await asyncio.wait_for(blocked, timeout=1)
        assert [await lanes.get(), await lanes.get()] == [2, 3]

    run(main())


def test_get_waits_for_an_item_and_a_cancelled_getter_loses_nothing() -> None:
    async def main() -> None:
        lanes: PriorityLanes[str] = PriorityLanes(10)
        cancelled = asyncio.create_task(lanes.get())
        served = asyncio.create_task(lanes.get())
        await settle()
        cancelled.cancel()
        lanes.put_nowait("x", "normal")
        assert await asyncio.wait_for(served, timeout=1) == "x"
        assert cancelled.cancelled()

    run(main())


def test_unknown_lane_is_an_error() -> None:
    lanes: PriorityLanes[str] = PriorityLanes(1)
    with pytest.raises(ValueError, match="unknown lane 'urgent'"):
        lanes.put_nowait("x", "urgent")


# --- Pacer


def fast_bucket(t: FakeTime) -> TokenBucket:
    return TokenBucket(1_000_000, 1, clock=t, sleep=t.sleep)


def test_pacer_never_exceeds_its_concurrency() -> None:
    t = FakeTime()
    pacer = Pacer(fast_bucket(t), concurrency=3)
    active = peak = 0

    async def send(lane: str) -> None:
        nonlocal active, peak
        async with pacer.slot(lane):
            active += 1
            peak = max(peak, active)
            await settle(30)  # the send takes a while
            active -= 1

    async def main() -> None:
        await asyncio.gather(*(send(("high", "normal", "bulk")[i % 3]) for i in range(60)))

    run(main())
    assert peak == 3
    assert pacer.in_use == 0 and pacer.waiting == 0


def test_pacer_serves_a_high_mail_before_ten_thousand_queued_bulk_mails() -> None:
    t = FakeTime()
    pacer = Pacer(fast_bucket(t), concurrency=1)
    order: list[str] = []

    async def send(name: str, lane: str, release: asyncio.Event | None = None) -> None:
        async with pacer.slot(lane):
            order.append(name)
            if release is not None:
                await release.wait()

    async def main() -> None:
        release = asyncio.Event()
        holder = asyncio.create_task(send("holder", "bulk", release))
        await settle()
        bulk = [asyncio.create_task(send(f"bulk-{i}", "bulk")) for i in range(10_000)]
        await settle()
        high = asyncio.create_task(send("mfa-code", "high"))
        await settle()
        assert pacer.waiting == 10_001
        release.set()
        await asyncio.gather(holder, high, *bulk)

    run(main())
    assert order[:2] == ["holder", "mfa-code"]
    assert order[2:] == [f"bulk-{i}" for i in range(10_000)]  # FIFO within the lane


def test_pacer_paces_at_the_bucket_rate() -> None:
    t = FakeTime()
    pacer = Pacer(TokenBucket(50, 1, clock=t, sleep=t.sleep), concurrency=4)
    stamps: list[float] = []

    async def send(lane: str) -> None:
        async with pacer.slot(lane):
            stamps.append(t.now)
            await settle(2)

    async def main() -> None:
        await asyncio.gather(*(send(("high", "bulk")[i % 2]) for i in range(200)))

    run(main())
    assert len(stamps) == 200
    assert most_in_window(sorted(stamps), 1.0, closed=False) == 50


def test_cancelled_pacer_waiters_give_back_their_slot_and_tokens() -> None:
    t = FakeTime()
    asleep = asyncio.Event()

    async def sleep_forever(seconds: float) -> None:
        asleep.set()
        await asyncio.Event().wait()

    bucket = TokenBucket(1, 1, clock=t, sleep=sleep_forever)
    pacer = Pacer(bucket, concurrency=2)

    async def hold(release: asyncio.Event) -> None:
        async with pacer.slot("normal"):
            await release.wait()

    async def main() -> None:
        release = asyncio.Event()
        first = asyncio.create_task(hold(release))  # takes the only token
        await settle()
        queued = asyncio.create_task(hold(release))  # has the turn and the second slot, waits for a token
        await asyncio.wait_for(asleep.wait(), timeout=1)
        assert pacer.in_use == 2
        behind = asyncio.create_task(hold(release))  # waits in its lane
        await settle()
        assert pacer.waiting == 1
        behind.cancel()
        queued.cancel()
        await asyncio.gather(queued, behind, return_exceptions=True)
        assert pacer.in_use == 1
        t.now += 1.0
        assert bucket.available() == pytest.approx(1.0)  # nobody took the refilled token
        late = asyncio.create_task(hold(release))
        await settle()
        assert pacer.in_use == 2  # the cancelled waiters' turn and slot went to the next one
        release.set()
        await asyncio.wait_for(asyncio.gather(first, late), timeout=1)
        assert pacer.in_use == 0

    run(main())


def test_a_waiter_cancelled_right_after_getting_its_turn_hands_the_slot_on() -> None:
    t = FakeTime()
    pacer = Pacer(fast_bucket(t), concurrency=1)
    served: list[str] = []

    async def send(name: str) -> None:
        async with pacer.slot("normal"):
            served.append(name)

    async def main() -> None:
        async with pacer.slot("normal"):
            first = asyncio.create_task(send("first"))
            second = asyncio.create_task(send("second"))
            await settle()
        first.cancel()  # its turn was given as the block exited, but it has not run yet
        await asyncio.wait_for(second, timeout=1)
        assert first.cancelled()
        assert pacer.in_use == 0

    run(main())
    assert served == ["second"]


# --- WireGate


@pytest.mark.parametrize("cap", [1, 14, 200])
def test_the_wire_gate_never_admits_more_than_its_cap_in_any_second(cap: int) -> None:
    # Requests reach the gate in clumps and at random moments, as late tasks do on a busy loop.
    t = LateTime(0.03, seed=cap)
    gate = WireGate(cap, clock=t, sleep=t.sleep)
    rng = random.Random(cap)

    async def main() -> list[float]:
        stamps: list[float] = []

        async def one() -> None:
            stamps.append(await gate.admit())

        while t.now <= 20:
            await asyncio.gather(*(one() for _ in range(rng.randint(1, 3 * cap))))
            await t.sleep(rng.uniform(0, 0.2))
        return stamps

    stamps = run(main())
    assert stamps == sorted(stamps)
    assert most_in_window(stamps, 1.0, closed=False) == cap  # half-open: SES's "in any one second"
    # ... even where writes drift apart on their way to SES by up to the allowance
    assert most_in_window(stamps, 1.0 + BUCKET_BOUND.jitter, closed=False) == cap
    assert BUCKET_BOUND.gate_window == pytest.approx(1.0 + BUCKET_BOUND.jitter)


def test_with_requests_always_waiting_the_wire_gate_fills_every_second() -> None:
    t = FakeTime()
    gate = WireGate(50, window=1.0, clock=t, sleep=t.sleep)

    async def main() -> list[float]:
        stamps: list[float] = []

        async def sender() -> None:
            while t.now < 10:
                stamps.append(await gate.admit())

        await asyncio.gather(*(sender() for _ in range(80)))
        return [s for s in stamps if s < 10]

    stamps = run(main())
    assert len(stamps) == 50 * 10
    assert most_in_window(stamps, 1.0, closed=False) == 50


def test_the_wire_gate_serves_waiters_in_arrival_order() -> None:
    t = FakeTime()
    gate = WireGate(2, window=1.0, clock=t, sleep=t.sleep)
    order: list[int] = []

    async def one(n: int) -> None:
        await gate.admit()
        order.append(n)

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(7)))

    run(main())
    assert order == list(range(7))
    assert t.now == pytest.approx(3.0)  # 7 at 2 a second: the last waits for the fourth second


def test_a_lower_cap_applies_to_the_next_admission() -> None:
    t = FakeTime()
    gate = WireGate(10, clock=t, sleep=t.sleep)

    async def main() -> list[float]:
        stamps = [await gate.admit() for _ in range(6)]  # six at 0.0
        gate.set_cap(2)  # a rebalance halved this worker's share
        stamps += [await gate.admit() for _ in range(3)]
        return stamps

    stamps = run(main())
    assert stamps[:6] == [0.0] * 6
    w = BUCKET_BOUND.gate_window
    assert stamps[6:] == pytest.approx([w, w, 2 * w])  # the window must drain below 2 first


def test_the_cap_for_a_quota_is_its_whole_sends_so_shares_never_add_up_to_more() -> None:
    assert [cap_for(q) for q in (1, 14, 49.99, 200, 0.5)] == [1, 14, 49, 200, 1]
    assert sum(cap_for(14 * share) for share in (0.5, 0.25, 0.25)) <= 14
    for bad in (0, -1):
        with pytest.raises(ValueError):
            cap_for(bad)
    with pytest.raises(ValueError):
        WireGate(0)
    with pytest.raises(ValueError, match="cannot bound a second"):
        WireGate(5, window=0.5)
