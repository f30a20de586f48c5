"""The gauges a worker computes about itself: readiness, consumer lag, restore progress, the oldest
due timer, event loop lag, build info and process metrics (``streams/metrics.py`` declares them).

``Observer.refresh`` reads the worker's view (``streams/runtime/status.py``, no Kafka call) and
sets the gauges; it runs before every scrape of ``/metrics`` and once a second with the event loop
sample, so a restore's progress is seen from its start even when scrapes are 30 s apart.

Label sets stay bounded: lag is per (topic, partition) of the configured input topics, restore per
table; gauges of partitions this worker no longer holds are removed, not left at their last value,
so ``sum`` over workers counts each partition once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from streams.metrics import Metrics, with_process_metrics
from streams.runtime.status import WorkerView

if TYPE_CHECKING:
    from streams.runtime.app import Wiring

# Once a second: often enough that a stall of the loop (a long tick, a GC pause) shows in the
# gauge between two scrapes; a sample costs one loop iteration.
LOOP_SAMPLE_SECONDS = 1.0


class Observer:
    def __init__(
        self,
        m: Metrics,
        view: Callable[[], WorkerView],
        ready: Callable[[], bool],
        earliest_due: Callable[[], float | None],
        now: Callable[[], float],
    ) -> None:
        self.m = m
        self._view, self._ready, self._earliest_due, self._now = view, ready, earliest_due, now
        self._restore_from: dict[tuple[str, int], int] = {}  # offset each restoring partition started at
        self._tables: set[str] = set()

    def refresh(self) -> None:
        m, view = self.m, self._view()
        m.worker_ready.set(1.0 if self._ready() else 0.0)
        m.consumer_lag.clear()
        for (topic, partition), lag in sorted(view.lag.items()):
            m.consumer_lag.labels(topic, str(partition)).set(lag)
        self._restore(view)
        due = self._earliest_due()
        now = self._now()
        m.timer_oldest_due_seconds.set(max(0.0, now - due) if due is not None else 0.0)

    def _restore(self, view: WorkerView) -> None:
        remaining: dict[str, int] = dict.fromkeys(self._tables, 0)
        restored: dict[str, int] = {}
        for r in view.restoring:
            start = self._restore_from.setdefault((r.table, r.partition), r.offset)
            remaining[r.table] = remaining.get(r.table, 0) + r.remaining
            restored[r.table] = restored.get(r.table, 0) + max(0, r.offset - start)
        if not view.restoring:
            self._restore_from.clear()  # the next restore counts from its own start
        self._tables.update(remaining)
        for table, rows in remaining.items():
            self.m.restore_rows_remaining.labels(table).set(rows)
        for table, rows in restored.items():
            self.m.restore_rows_restored.labels(table).set(rows)

    async def sample_loop(self) -> None:
        """How long a callback that is ready waits for the loop: one iteration's worth of other work."""
        started = time.perf_counter()
        await asyncio.sleep(0)
        self.m.event_loop_lag_seconds.set(time.perf_counter() - started)
        self.refresh()


def register(
    wiring: Wiring, m: Metrics, *, ready: Callable[[], bool], earliest_due: Callable[[], float | None],
    now: Callable[[], float],
) -> Observer:
    with_process_metrics(m, wiring.settings.role)
    observer = Observer(m, wiring.status, ready, earliest_due, now)
    wiring.commits.on_commit_seconds = m.commit_seconds.observe
    wiring.on_kafka_request(lambda client, api: m.kafka_requests.labels(client, api).inc())
    wiring.every(LOOP_SAMPLE_SECONDS, observer.sample_loop, name="tidings.observe")
    return observer
