"""The in-memory due-time index of one worker: which entities have a timer due, per partition.

The timers themselves live in the ``timers`` table (RocksDB + changelog); this index only says
*when* to look at which entity, so a tick costs O(k log n) for k due entities out of n pending,
never a scan (DESIGN invariant 3). It holds one entry per entity with pending timers: the
entity's earliest due time. Entries are a min-heap with lazy deletion: moving a timer pushes a
new entry and the old one is dropped when it surfaces, because ``_next[key]`` no longer matches
it; the heap is compacted when stale entries outnumber live ones, so memory stays proportional to
pending entities.

It is rebuilt, never restored: after a rebalance or a restart every partition is forgotten
(``invalidate``), and the tick agent builds each from that partition's table rows before its
first tick (``build``). A build reads a quarter of a million rows per partition at a million
entities, about a second of CPU, so it runs in slices of about 10 ms with the event loop's other
work (an ingest agent's password reset, rendering) in between, instead of holding the loop for
all of it. The rows come from an iterator that may or may not see writes made after it opened
(RocksDB's reads the snapshot taken when it opens: ``StateTables.partition_items``), so while a
partition is being built, ``set`` records each change in the build's *overlay* (key -> due time,
or None for no timer): a row read from the table never replaces a key of the overlay, and when
the rows are done the overlay is applied over them. The result is what the table holds when the
build ends, whatever the iterator saw. A rebalance during a build abandons it (the partition is
not installed); the next tick starts a new one. A partition is ready, and ticks may pop from it,
only once its build is complete. ``rebuild`` loads a partition at once, for callers whose
entries are at hand (the replay, tests).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Iterable

# How long a build holds the event loop before it lets the other agents run, and how many rows
# it reads between looks at the clock (a row costs about 3.5 us: 256 rows is about 1 ms).
SLICE_SECONDS = 0.01
_ROWS_PER_CLOCK_CHECK = 256


class _Partition:
    __slots__ = ("heap", "next")

    def __init__(self) -> None:
        self.heap: list[tuple[float, str]] = []
        self.next: dict[str, float] = {}


class _Build:
    """A partition being built: what it has read so far, and the changes made meanwhile."""

    __slots__ = ("part", "overlay")

    def __init__(self) -> None:
        self.part = _Partition()
        self.overlay: dict[str, float | None] = {}


class TimerIndex:
    def __init__(self, *, slice_seconds: float = SLICE_SECONDS) -> None:
        self._parts: dict[int, _Partition] = {}
        self._builds: dict[int, _Build] = {}
        self.slice_seconds = slice_seconds

    def ready(self, partition: int) -> bool:
        return partition in self._parts

    def building(self, partition: int) -> bool:
        return partition in self._builds

    def ready_partitions(self) -> int:
        """How many partitions are ready: those whose ticks fire timers."""
        return len(self._parts)

    def invalidate(self) -> None:
        """Forget every partition (on rebalance): each is rebuilt before its next tick.

        A build in progress is abandoned: it read rows of an assignment that is over.
        """
        self._parts.clear()
        self._builds.clear()

    def rebuild(self, partition: int, entries: Iterable[tuple[str, float]]) -> int:
        """Load one partition from ``(entity key, earliest due as epoch seconds)`` at once; returns the count.

        For callers whose entries are already at hand (the replay, tests): nothing else runs
        until it returns. A build of the same partition in progress is abandoned.
        """
        self._builds.pop(partition, None)
        part = _Partition()
        part.next = dict(entries)
        part.heap = [(due, key) for key, due in part.next.items()]
        heapq.heapify(part.heap)
        self._parts[partition] = part
        return len(part.next)

    async def build(self, partition: int, entries: Iterable[tuple[str, float]]) -> int | None:
        """Load one partition from ``entries`` in slices of ``slice_seconds``, letting the event
        loop run other work between slices; returns the count, or None when the build was
        abandoned: ``invalidate`` (the partition is then not ready), or the partition was built
        again meanwhile (it is ready if that other build completed).

        ``entries`` must not have been advanced yet: changes are recorded from this call on, so
        an iterator that opens its snapshot at its first row misses none of them.
        """
        # Not ready while it is built: ``set`` goes to one place, the overlay, and no tick pops
        # from a partition that the build is about to replace.
        self._parts.pop(partition, None)
        build = self._builds[partition] = _Build()
        it = iter(entries)
        try:
            part, overlay = build.part, build.overlay
            heap, nxt = part.heap, part.next
            push = heapq.heappush
            more = True
            while more:
                more = False
                deadline = time.perf_counter() + self.slice_seconds
                n = 0
                for key, due in it:
                    # The overlay is applied over everything at the end; a row of a key it holds
                    # would only leave a stale heap entry. Pushed as read rather than heapified
                    # at the end: about 50 ms more CPU at 250,000 rows, but spread over the
                    # slices instead of held in one piece.
                    if key not in overlay:
                        nxt[key] = due
                        push(heap, (due, key))
                    n += 1
                    if n % _ROWS_PER_CLOCK_CHECK == 0 and time.perf_counter() >= deadline:
                        more = True
                        break
                if more:
                    await asyncio.sleep(0)
                    if self._builds.get(partition) is not build:
                        return None
            # No await since the last check: the build is still current.
            for key, latest in overlay.items():
                if latest is None:
                    nxt.pop(key, None)
                elif nxt.get(key) != latest:
                    nxt[key] = latest
                    push(heap, (latest, key))
            _compact(part)
            del self._builds[partition]
            self._parts[partition] = part
            return len(nxt)
        finally:
            if self._builds.get(partition) is build:
                del self._builds[partition]  # cancelled or failed: nothing may keep recording into it
            close = getattr(it, "close", None)
            if close is not None:
                # A generator over RocksDB holds the partition's database open until it is
                # closed; a revoked partition's database must go as soon as its build does.
                close()

    def set(self, partition: int, key: str, due: float | None) -> None:
        """The entity's earliest due time changed (None: it has no timer any more).

        While the partition is being built, the change goes into the build's overlay, which wins
        over what the build reads from the table. A partition neither ready nor being built is
        left alone: its build has not opened the table yet, so it will read this change there.
        """
        part = self._parts.get(partition)
        if part is None:
            build = self._builds.get(partition)
            if build is not None:
                build.overlay[key] = due
            return
        if due is None:
            part.next.pop(key, None)
        elif part.next.get(key) != due:
            part.next[key] = due
            heapq.heappush(part.heap, (due, key))
            _compact(part)

    def pop_due(self, partition: int, now: float, limit: int) -> list[str]:
        """Up to ``limit`` entity keys whose earliest timer is due at ``now``, earliest first.

        They leave the index; the caller fires their due timers and ``set``s the next due time.
        """
        part = self._parts[partition]
        out: list[str] = []
        heap, nxt = part.heap, part.next
        while heap and heap[0][0] <= now and len(out) < limit:
            due, key = heapq.heappop(heap)
            if nxt.get(key) == due:
                del nxt[key]
                out.append(key)
        return out

    def earliest(self, partition: int) -> float | None:
        part = self._parts.get(partition)
        if part is None:
            return None
        heap, nxt = part.heap, part.next
        while heap and nxt.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def earliest_any(self) -> float | None:
        """The earliest due time over the ready partitions (the oldest due-but-unfired timer's age)."""
        dues = [due for due in (self.earliest(p) for p in list(self._parts)) if due is not None]
        return min(dues, default=None)

    def pending(self) -> int:
        """Entities with a pending timer, over the ready partitions."""
        return sum(len(p.next) for p in self._parts.values())


def _compact(part: _Partition) -> None:
    """Drop the stale entries once they outnumber the live ones (memory follows pending entities)."""
    if len(part.heap) > 2 * len(part.next) + 1024:
        part.heap = [(d, k) for k, d in part.next.items()]
        heapq.heapify(part.heap)
