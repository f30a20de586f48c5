"""Knowing when a table write has been committed, per partition number.

Under exactly-once, what an agent writes to a table joins the open Kafka transaction of its
partition number and becomes durable only when Faust next commits that partition (every
``TIDINGS_COMMIT_INTERVAL_SECONDS``, and only for partitions whose offsets moved). Until then a
crash rolls it back. The sender needs to know that moment to bound what a crash can send twice
(``streams/delivery/agents.py``): it holds a permit from each request until the commit that
carries the request's outcome.

``CommitWatch`` is fed by the consumer (``streams/runtime/transport.py``): it snapshots the write counter
before a commit and, once the commit succeeded, marks every write up to the snapshot as committed
for the partition numbers the commit covered, and reports how long the commit took
(``on_commit_seconds``, the ``tidings_commit_seconds`` histogram: streams/observe.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable


class CommitWatch:
    def __init__(self) -> None:
        self.on_commit_seconds: Callable[[float], None] = lambda seconds: None
        self._written = 0
        self._committed: dict[int, int] = {}
        self._waiters: list[tuple[int, int, asyncio.Future[None], float]] = []

    def written(self) -> int:
        """Call right after a table write; returns its sequence number."""
        self._written += 1
        return self._written

    def snapshot(self) -> int:
        """The last write a commit starting now will carry (its changelog records are flushed first)."""
        return self._written

    def committed(self, partitions: Iterable[int], upto: int) -> None:
        for p in partitions:
            self._committed[p] = max(self._committed.get(p, 0), upto)
        self._wake(lambda p, seq: self._committed.get(p, 0) >= seq)

    def release_all(self) -> None:
        """A rebalance: partitions may have moved away; what was not committed is not ours to wait for."""
        self._wake(lambda p, seq: True)

    async def wait(self, partition: int, seq: int) -> None:
        """Until write ``seq`` (made on ``partition``) is committed, or ``release_all``."""
        if self._committed.get(partition, 0) >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((partition, seq, future, time.monotonic()))
        await future

    def waiting_longer_than(self, seconds: float) -> set[int]:
        """Partitions with a write waited for longer than ``seconds``: no regular commit covered them.

        Faust commits a partition only when its offsets move; they stay put while every record of
        the partition waits (all its mails retrying through an SES outage, or waiting for a permit
        that only this commit would free). ``TidingsConsumer.commit_transactions_of`` commits them.
        """
        since = time.monotonic() - seconds
        return {p for p, _, future, started in self._waiters if not future.done() and started < since}

    def _wake(self, ready) -> None:
        keep = []
        for waiter in self._waiters:
            partition, seq, future, _ = waiter
            if future.done():
                continue
            if ready(partition, seq):
                future.set_result(None)
            else:
                keep.append(waiter)
        self._waiters = keep
