"""What the worker's next fetch asks the broker for: how many bytes to gather and how long to wait.

aiokafka sends one fetch at a time to a broker, for the partitions whose fetched records have all
been handed over, and builds each request from the fetcher's ``_fetch_min_bytes`` and
``_fetch_max_wait_ms`` (pinned in ``streams/runtime/contract.py``). The consumer thread
(``streams/runtime/transport.py``) sets both after every batch Faust takes, from ``FetchPacing``:

- **steady** (the default): ``TIDINGS_FETCH_MIN_BYTES`` and ``TIDINGS_FETCH_MAX_WAIT_MS`` (64 KiB,
  10 ms): a few events per fetch round at a steady rate, for at most 10 ms of latency.
- **busy**, after a full batch (``max_records`` non-urgent records: more are waiting): one byte and
  ``TIDINGS_FETCH_BUSY_MAX_WAIT_MS`` (100 ms). The next fetches then cover only partitions with
  nothing to read, about a hundred, each answer coming back empty after the wait and decoded in
  Python; at saturation 100 ms instead of 10 cost a tenth less CPU per event (the e2e saturation
  phase, seven alternating pairs). One byte, because among those partitions are the urgent
  topics': a password reset must end the wait at once, not wait for 64 KiB of others or the
  100 ms. (A priority partition the fetch in flight left out waits for its answer; the sender
  benchmark at 1,000 mails/s, 100 and 10 ms in turn, found the priority lane's p99 no worse.)
  A batch that is not full is steady again.
- **quiet**, after a fetch whose answer held no record: one byte and ``TIDINGS_FETCH_QUIET_MAX_WAIT_MS``
  (100 ms; at or below the steady wait, off). The next fetch
  covers the same partitions, which had nothing for a whole steady wait: asking for 64 KiB again
  only made the broker hold it 10 ms and answer empty, up to a hundred times a second, each answer
  decoded over every partition in Python. The sender draining a backlog at its quota is always
  here: the partitions with records are fetched already and wait in the buffers, the rest are
  empty (at 50 mails/s the consumer thread took two fifths of the worker's GIL time, py-spy).
  One byte, so the first record ends the wait (sooner than a steady fetch would); a fetch that
  brings records is steady again. ``fetched`` learns it from every answer (``transport.py``
  wraps the fetcher's ``_proc_fetch_request``).
- **idle**, after ``IDLE_AFTER_SECONDS`` without a record: one byte and
  ``TIDINGS_FETCH_IDLE_MAX_WAIT_MS`` (500 ms). The request then covers every partition, so the
  broker answers it as soon as any record arrives (no added latency), and an idle worker polls
  a few times a second instead of a hundred. The first record makes it steady again.

A fifth of a second, not longer: the leader publishes a tick to every partition each second
(``TIDINGS_TICK_INTERVAL_SECONDS``), so a worker with nothing else to do still gets records once a
second. A steady rate's gaps are far shorter. Faust waits up to a second for a batch; the consumer
thread waits at most ``IDLE_AFTER_SECONDS`` (``wait_seconds``), so that an empty wait can switch the
fetches to idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

IDLE_AFTER_SECONDS = 0.2


class FetchPacing:
    def __init__(self, min_bytes: int, wait_ms: int, busy_wait_ms: int, idle_wait_ms: int, quiet_wait_ms: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.steady = (min_bytes, wait_ms)
        self.busy = (1, busy_wait_ms)
        self.quiet = (1, quiet_wait_ms) if quiet_wait_ms > wait_ms else self.steady
        self.idle = (1, idle_wait_ms)
        self._clock = clock
        self._last_record = clock()
        self._behind = False  # the last batch taken was full
        self._empty = False  # the last fetch answered held no record

    @staticmethod
    def wait_seconds(timeout: float | None) -> float:
        """How long to wait for a batch when Faust asks to wait ``timeout``: an empty wait is what
        ``after`` learns idleness from."""
        return IDLE_AFTER_SECONDS if timeout is None else min(timeout, IDLE_AFTER_SECONDS)

    def after(self, records: Mapping[Any, list[Any]], urgent_topics: frozenset[str], max_records: int | None) -> tuple[int, int]:
        """``(min_bytes, max_wait_ms)`` for the fetches after the batch ``records`` was taken."""
        now = self._clock()
        if any(records.values()):
            self._last_record = now
            self._behind = max_records is not None and sum(
                len(batch) for tp, batch in records.items() if tp.topic not in urgent_topics) >= max_records
        else:
            self._behind = False
        return self._choose(now)

    def fetched(self, records: bool) -> tuple[int, int]:
        """``(min_bytes, max_wait_ms)`` for the next fetch, after one was answered with or without ``records``."""
        self._empty = not records
        return self._choose(self._clock())

    def _choose(self, now: float) -> tuple[int, int]:
        if self._behind:
            return self.busy
        if now - self._last_record >= IDLE_AFTER_SECONDS:
            return self.idle
        return self.quiet if self._empty else self.steady
