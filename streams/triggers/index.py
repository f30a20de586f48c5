"""The in-memory due-time index of one worker: which entities have a timer due, per partition.

The timers themselves live in the ``timers`` table (RocksDB + changelog); this index only says
*when* to look at which entity, so a tick costs O(k log n) for k due entities out of n pending,
never a scan (DESIGN invariant 3). It holds one entry per entity with pending timers: the
entity's earliest due time.

It is rebuilt, never restored: after a rebalance or a restart each partition is marked not ready,
and the tick agent rebuilds it from that partition's table data before its first tick. Entries
are a min-heap with lazy deletion: moving a timer pushes a new entry and the old one is dropped
when it surfaces, because ``_next[key]`` no longer matches it; the heap is compacted when stale
entries outnumber live ones, so memory stays proportional to pending entities.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class _Partition:
    __slots__ = ("heap", "next")

    def __init__(self) -> None:
        self.heap: list[tuple[float, str]] = []
        self.next: dict[str, float] = {}


class TimerIndex:
    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def ready(self, partition: int) -> bool:
        return partition in self._parts

    def invalidate(self) -> None:
        """Forget every partition (on rebalance): each is rebuilt before its next tick."""
        self._parts.clear()

    def rebuild(self, partition: int, entries: Iterable[tuple[str, float]]) -> int:
        """Load one partition from ``(entity key, earliest due as epoch seconds)``; returns the count."""
        part = _Partition()
        part.next = dict(entries)
        part.heap = [(due, key) for key, due in part.next.items()]
        heapq.heapify(part.heap)
        self._parts[partition] = part
        return len(part.next)

    def set(self, partition: int, key: str, due: float | None) -> None:
        """The entity's earliest due time changed (None: it has no timer any more).

        A partition that is not ready is left alone: its rebuild reads the table, which already
        holds this change.
        """
        part = self._parts.get(partition)
        if part is None:
            return
        if due is None:
            part.next.pop(key, None)
        elif part.next.get(key) != due:
            part.next[key] = due
            heapq.heappush(part.heap, (due, key))
            if len(part.heap) > 2 * len(part.next) + 1024:
                part.heap = [(d, k) for k, d in part.next.items()]
                heapq.heapify(part.heap)

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
