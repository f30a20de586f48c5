"""Pacing the sender: SES's maximum send rate, a bound on sends in flight, and priority lanes.

    TokenBucket      ``await bucket.acquire(n)`` before a send to n recipients (SES meters recipients)
    PriorityLanes    bounded FIFO queues in a fixed priority order; ``get`` serves the first non-empty lane
    Pacer            the two above plus a concurrency bound, for callers that send themselves:

        async with pacer.slot("high", recipients=1):
            await sender.send(...)

    WireGate         at most ``cap`` requests in any window of a second and a little, counted at the
                     moment each is written to its socket: the hard bound, where the bucket is the smooth one

Pure asyncio (no boto3, no faust). Time comes from an injectable monotonic ``clock`` and ``sleep``
so tests run on a fake clock without waiting.

The shape of the bucket. SES states its quota per second ("maximum send rate"). A bucket of
``burst`` tokens refilled at ``rate`` per second admits at most ``rate * t + burst`` recipients in
any window of length ``t``, so at most ``floor(rate + burst)`` in any one second. Two things pull
in opposite directions:

- the quota: ``rate + burst`` must stay under ``quota + 1``, or a one-second window can hold one
  recipient too many (measured with ``rate = quota, burst = 1``: 51 sends in one second at 50);
- the sleeps: a waiter sleeps until its token is due and wakes late by whatever the event loop
  adds. With ``burst = 1`` the tokens earned while it overslept are lost (measured: 46/s paced at
  49/s); a burst of ``1 + rate * tolerance`` keeps them for oversleeps up to ``tolerance``.

The bucket counts grants, not requests on the wire. Between a grant and the moment the
request's bytes are handed to the socket, the sender signs it, holds it until a moment
``SEND_LEAD_SECONDS`` after its grant and hands it to the HTTP client, whose write runs as a
task of its own: on a busy event loop that task starts late, by up to 21 ms in the sender
benchmark at 200/s (p99 3 ms), and late requests then leave together. So the lean SES client
passes each request through a ``WireGate`` at the write itself (``sesv2.py``): at most ``cap``
writes in any window of ``w`` seconds (a second and the wire's jitter, below), counted at the moment
of the write, whatever happened before it. Proof sketch: a request is admitted at ``t`` only if
fewer than ``cap`` writes fall in ``(t - w, t]``; in any window ``[s, s + w)`` take the last
write ``t``: every other write in the window is in ``(t - w, t]`` and was counted when ``t`` was
admitted.

What the gate cannot see is the way from the socket to SES. A ``WireShape`` says how far a
client's requests may drift on it, and so how the layers are shaped; each client names its own
(``EmailSender.wire``):

- ``WRITE_GATED`` (the lean client, which writes at the gate with nothing that can suspend in
  between): the gate is the hard bound. Its window is a second and ``jitter`` (10 ms), what is left
  for the way from the socket to SES. Measured against the benchmark's stand-in, which stamps a
  request with the kernel's receive time of its first byte (``deploy/sesstub/arrival.go``): gate
  to arrival 0.02 ms at the median, 0.07 ms at the 99th percentile, 3.2 ms at most (6,000 sends at
  200 and 500/s). The bucket runs at the gate's own sustained rate, ``cap / window``, with a burst
  of ``catch_up`` seconds of sends: a sender that a busy loop held back for up to that long makes
  it up at once, and the gate trims whatever a catch-up would put over the cap. About 1 % under
  the quota, plus what stalls longer than the catch-up cost.
- ``BUCKET_BOUND`` (boto3, which writes from a thread after the gate): the bucket alone must hold
  the quota. ``jitter`` is 3 %, because a thread's write can drift tens of milliseconds from its
  admission; ``rate`` is the largest with ``rate * (1 + jitter) + burst < quota + 1`` and the
  burst only covers an oversleep of ``catch_up`` (5 ms): 48.3/s at 50, 193/s at 200, 966/s at
  1000, about 3.5 % under the quota.

Why a bound on the way at all: before the stand-in stamped with the kernel's clock, its handler's
clock drifted from the socket by up to 16 ms at nice -10 (41 ms without) on this machine's
saturated cores, and with a 1 % allowance it counted 51 arrivals in a second at a quota of 50.
That drift was the stand-in's scheduler, not the network; real SES stamps on machines of its own.

``ses_shape(quota, wire)`` gives the bucket's ``(rate, burst)``. Going over the quota costs
throttled requests and retries, going under costs seconds. A burst of ``quota`` would instead let
an idle sender spend a second's worth at once, ``2 * quota - 1`` in a window; SES tolerates short
bursts above the quota but throttles if they last. A new bucket starts empty, so a starting worker
does not add its burst to the clump of first requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Highest priority first. "high": password resets, MFA codes, anything a person is waiting for;
# "normal": the rest of the transactional mail; "bulk": reminders and digests.
LANES = ("high", "normal", "bulk")
SES_BURST = 1  # the least burst: one recipient per request
# How late a waiter may wake without losing the send it waited for (see the module docstring).
OVERSLEEP_TOLERANCE_SECONDS = 0.005
WINDOW_SECONDS = 1.0  # SES states its quota per second


@dataclass(frozen=True)
class WireShape:
    """How a client's requests reach SES (see the module docstring).

    ``jitter``: how far, as a fraction of a second, a request's arrival at SES may drift from the
    moment it was counted. ``catch_up``: how many seconds of sends a late sender may make up at
    once. ``gated``: every request is counted by the ``WireGate`` at its socket write, so the gate
    is the hard bound and the bucket only smooths.
    """

    jitter: float
    catch_up: float
    gated: bool

    @property
    def gate_window(self) -> float:
        """A second and the jitter: writes that drift that much still arrive ``cap`` in any second."""
        return WINDOW_SECONDS * (1 + self.jitter)


BUCKET_BOUND = WireShape(jitter=0.03, catch_up=OVERSLEEP_TOLERANCE_SECONDS, gated=False)
WRITE_GATED = WireShape(jitter=0.01, catch_up=0.05, gated=True)

# Tokens short of a whole by less than this count as whole. Float refill arithmetic leaves
# 0.9999999999 where 1 was meant; without the tolerance a fake clock spins on ever-smaller sleeps.
_TOKEN_EPSILON = 1e-9


class TokenBucket:
    """``rate_per_second`` tokens a second, at most ``burst`` saved up; waiters served in arrival order."""

    def __init__(
        self,
        rate_per_second: float,
        burst: float = SES_BURST,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be positive, got {rate_per_second}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = float(rate_per_second)
        self.burst = float(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst  # a new bucket is full: the first `burst` acquisitions do not wait
        self._stamp = clock()
        self._turn = asyncio.Lock()  # one waiter at a time; asyncio.Lock is first come, first served

    def available(self) -> float:
        """Tokens available now (a snapshot; a queued waiter may take them next)."""
        self._refill()
        return self._tokens

    async def acquire(self, n: float = 1) -> None:
        """Wait until ``n`` tokens are available and take them.

        Cancelling a waiter takes nothing: tokens are deducted only when the whole ``n`` is there.
        """
        if not 0 < n <= self.burst:
            raise ValueError(f"cannot take {n} tokens from a bucket that holds at most {self.burst}")
        async with self._turn:
            while True:
                self._refill()
                if self._tokens >= n - _TOKEN_EPSILON:
                    self._tokens -= n
                    return
                await self._sleep((n - self._tokens) / self.rate)

    def set_rate(self, rate_per_second: float, burst: float | None = None) -> None:
        """Change the rate (and burst) from now on (a worker's share of the quota after a rebalance)."""
        if rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be positive, got {rate_per_second}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self._refill()  # tokens earned so far were earned at the old rate
        self.rate = float(rate_per_second)
        if burst is not None:
            self.burst = float(burst)
            self._tokens = min(self._tokens, self.burst)

    @classmethod
    def for_quota(cls, quota: float, wire: WireShape = BUCKET_BOUND, **kwargs: Clock | Sleep) -> TokenBucket:
        """A bucket shaped by ``ses_shape``, starting empty."""
        rate, burst = ses_shape(quota, wire)
        bucket = cls(rate, burst, **kwargs)  # type: ignore[arg-type]  # clock=/sleep=: mypy cannot pair each name with its type
        bucket._tokens = 0.0
        return bucket

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now


def ses_shape(quota: float, wire: WireShape = BUCKET_BOUND) -> tuple[float, float]:
    """``(rate, burst)`` of the bucket for a send-rate quota and a client's wire; why, in the module docstring."""
    if quota <= 0:
        raise ValueError(f"quota must be positive, got {quota}")
    burst = SES_BURST + quota * wire.catch_up
    if wire.gated:
        # the gate's sustained rate: its cap in each of its windows (a share under 1 keeps its own rate)
        return min(quota, cap_for(quota)) / (1 + wire.jitter) - 1e-6, burst
    return (quota + SES_BURST - burst) / (1 + wire.jitter) - 1e-6, burst


class PriorityLanes(Generic[T]):
    """Bounded FIFO lanes in a fixed priority order; ``get`` takes from the first non-empty lane.

    ``put`` to a full lane waits until a ``get`` makes room (backpressure per lane: a flood of
    bulk items never blocks a ``put`` to "high"). ``maxsize`` is one size for every lane or a size
    per lane; a size of 0 means unbounded, as in ``asyncio.Queue``. Cancelling a waiting ``put`` or
    ``get`` loses nothing, as in ``asyncio.Queue``.
    """

    def __init__(self, maxsize: int | Mapping[str, int], lanes: Sequence[str] = LANES) -> None:
        self.lanes = tuple(lanes)
        if not self.lanes or len(set(self.lanes)) != len(self.lanes):
            raise ValueError(f"lanes must be distinct and not empty, got {lanes!r}")
        sizes = maxsize if isinstance(maxsize, Mapping) else dict.fromkeys(self.lanes, maxsize)
        self._maxsize = {lane: int(sizes[lane]) for lane in self.lanes}
        self._items: dict[str, deque[T]] = {lane: deque() for lane in self.lanes}
        self._putters: dict[str, deque[asyncio.Future[None]]] = {lane: deque() for lane in self.lanes}
        self._getters: deque[asyncio.Future[None]] = deque()

    def qsize(self, lane: str | None = None) -> int:
        if lane is None:
            return sum(len(items) for items in self._items.values())
        return len(self._items[self._known(lane)])

    def full(self, lane: str) -> bool:
        size = self._maxsize[self._known(lane)]
        return 0 < size <= len(self._items[lane])

    async def put(self, item: T, lane: str) -> None:
        """Append ``item`` to ``lane``, waiting while the lane is full."""
        while self.full(lane):
            putter = asyncio.get_running_loop().create_future()
            self._putters[lane].append(putter)
            try:
                await putter
            except BaseException:
                putter.cancel()
                with contextlib.suppress(ValueError):
                    self._putters[lane].remove(putter)
                if not self.full(lane) and not putter.cancelled():
                    _wake_next(self._putters[lane])  # we were woken but will not put: pass it on
                raise
        self.put_nowait(item, lane)

    def put_nowait(self, item: T, lane: str) -> None:
        if self.full(lane):
            raise asyncio.QueueFull(lane)
        self._items[lane].append(item)
        _wake_next(self._getters)

    async def get(self) -> T:
        """The oldest item of the highest-priority non-empty lane, waiting while all are empty."""
        while not self.qsize():
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                if self.qsize() and not getter.cancelled():
                    _wake_next(self._getters)
                raise
        return self.get_nowait()

    def get_nowait(self) -> T:
        for lane in self.lanes:
            if self._items[lane]:
                item = self._items[lane].popleft()
                _wake_next(self._putters[lane])
                return item
        raise asyncio.QueueEmpty

    def _known(self, lane: str) -> str:
        if lane not in self._items:
            raise ValueError(f"unknown lane {lane!r}; the lanes are {', '.join(self.lanes)}")
        return lane


def _wake_next(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


class Pacer:
    """Admits sends in priority order, at most ``concurrency`` in flight, at the bucket's rate.

    ``slot(lane, recipients)`` waits for its turn, a free slot and the tokens, then holds the slot
    until the block exits. Turns go to the highest-priority waiter first, first come first served
    within a lane, one at a time: the waiter whose turn it is takes a free slot, then waits for its
    tokens; everyone else waits in their lane. A "high" mail therefore waits for at most one
    admission in progress and a free slot, never for the bulk mails that queued before it.

    Cancelling a waiter costs nothing: a waiter still in its lane is skipped; one that already had
    its turn gives back the slot and takes no tokens.
    """

    def __init__(self, bucket: TokenBucket, *, concurrency: int, lanes: Sequence[str] = LANES) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.bucket = bucket
        self.concurrency = concurrency
        self._in_use = 0
        self._admitting = False
        # Unbounded: every waiter is a task that already exists; backpressure is the callers' to
        # apply (a Faust agent's concurrency bounds how many wait here).
        self._turns: PriorityLanes[asyncio.Future[None]] = PriorityLanes(0, lanes)

    @property
    def in_use(self) -> int:
        """Slots held right now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Waiters in the lanes (a cancelled one counts until its turn comes up and is skipped)."""
        return self._turns.qsize()

    @contextlib.asynccontextmanager
    async def slot(self, lane: str = "normal", recipients: int = 1) -> AsyncIterator[None]:
        await self._admit(lane, recipients)
        try:
            yield
        finally:
            self._in_use -= 1
            self._give_turn()

    async def _admit(self, lane: str, recipients: int) -> None:
        if not 0 < recipients <= self.bucket.burst:
            raise ValueError(f"{recipients} recipients exceed the bucket's burst of {self.bucket.burst}")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.put_nowait(turn, lane)
        self._give_turn()
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():  # had the turn and a slot, cancelled before using them
                self._in_use -= 1
                self._admitting = False
                self._give_turn()
            else:
                turn.cancel()  # still in its lane: _give_turn skips it
            raise
        try:
            await self.bucket.acquire(recipients)
        except BaseException:
            self._in_use -= 1
            raise
        finally:
            self._admitting = False
            self._give_turn()

    def _give_turn(self) -> None:
        while not self._admitting and self._in_use < self.concurrency and self._turns.qsize():
            turn = self._turns.get_nowait()
            if turn.done():  # its waiter was cancelled
                continue
            self._in_use += 1
            self._admitting = True
            turn.set_result(None)


class WireGate:
    """At most ``cap`` admissions in any window of ``window`` seconds, counted when each is admitted.

    ``await gate.admit()`` immediately before the write it guards, with nothing that can suspend
    in between, so the moment admitted is the moment written (see the module docstring). Waiters
    are served in arrival order. ``cap`` follows the worker's share of the quota (``set_cap``).
    """

    def __init__(
        self, cap: int, *, window: float = BUCKET_BOUND.gate_window, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        if window < WINDOW_SECONDS:
            raise ValueError(f"a window shorter than {WINDOW_SECONDS}s cannot bound a second, got {window}")
        self.cap = _valid_cap(cap)
        self.window = window
        self._clock, self._sleep = clock, sleep
        self._admitted: deque[float] = deque()
        self._turn = asyncio.Lock()

    @classmethod
    def for_quota(cls, quota: float, wire: WireShape = BUCKET_BOUND, **kwargs: Clock | Sleep) -> WireGate:
        return cls(cap_for(quota), window=wire.gate_window, **kwargs)  # type: ignore[arg-type]  # clock=/sleep=, as in TokenBucket.for_quota

    def set_cap(self, cap: int) -> None:
        self.cap = _valid_cap(cap)

    async def admit(self) -> float:
        """Wait until the window has room, take a place in it and return the moment taken."""
        async with self._turn:
            while True:
                now = self._clock()
                admitted = self._admitted
                while admitted and admitted[0] <= now - self.window + _TOKEN_EPSILON:
                    admitted.popleft()
                if len(admitted) < self.cap:
                    admitted.append(now)
                    return now
                # Room comes when the admission ``cap`` places back leaves the window (one place
                # after a full window, more after the cap shrank).
                await self._sleep(admitted[len(admitted) - self.cap] + self.window - now)


def cap_for(quota: float) -> int:
    """The whole sends a quota (or a worker's share of one) allows in a second, at least one."""
    if quota <= 0:
        raise ValueError(f"quota must be positive, got {quota}")
    return max(1, math.floor(quota + 1e-9))


def _valid_cap(cap: int) -> int:
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    return int(cap)
