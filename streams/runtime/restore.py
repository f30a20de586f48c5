"""Table restore from the changelogs at librdkafka's speed, in front of Faust's recovery (faust-streaming 0.15.x).

Faust restores a table partition record by record through the worker's stream machinery: the
aiokafka consumer thread hands a fetch over to the event loop, ``Consumer._drain_messages``
awaits ``wait_first`` (two tasks) for each record, the conductor decodes its key, the changelog
queue and ``Recovery._slurp_changelogs`` (``wait_for``, another task, and ``need_recovery`` over
every partition) take it, and only then does a batch of 1,000 reach RocksDB as one write batch.
That ran at about 5,000 rows/s on two cores (py-spy: the RocksDB writes were 1 % of the
worker's GIL samples, ``_drain_messages`` a quarter, ``need_recovery`` alone 8 %), so a worker
with no local state took seven minutes for a million entities before it processed anything.

``TidingsRecovery._build_offsets`` reads the active changelog partitions first, after Faust has
computed where each one starts (its persisted offset, or the log start) and ends (the highwater:
the last committed record, ``transport.changelog_ends``): one confluent-kafka consumer in a
thread, ``read_committed`` under exactly-once as Faust's own, each partition's records of a fetch
written to its RocksDB database as one write batch, together with the offset reached (as Faust's
``Store.apply_changelog_batch`` does: raw key bytes, tombstones as deletes, the persisted offset).
It then reports the offset reached as read, so Faust seeks there and finds nothing left, or
reads what is left its own way. The records, their order and what is written are those Faust
would have applied, so the exactly-once reasoning of ``RestoredTable`` holds unchanged.

Faust waits for ``_build_offsets`` with ``broker_request_timeout`` and takes a timeout for a
stopped service; the fast read therefore stops after ``BUDGET_FRACTION`` of it and leaves the
rest of the partitions to Faust. A rebalance in the middle cancels the wait: the thread stops at
its next write batch, before the coroutine gives the cancellation back to Faust. Faust does not
wait for the cancelled step, so its next round may start a restore meanwhile: restores run one at
a time (``_ONE_AT_A_TIME``), so an older thread's last batch never lands after a newer one's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rocksdict
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from streams.runtime.transport import bootstrap_of

log = logging.getLogger(__name__)

# Of broker_request_timeout, Faust's limit for _build_offsets (it stops the recovery service
# when a step overruns): what is not read by then is left to Faust's record-by-record path.
BUDGET_FRACTION = 0.6
# Records asked of librdkafka per call; each partition's share of a call is one RocksDB write batch.
CONSUME_BATCH = 10_000
# The longest one call waits for CONSUME_BATCH records. librdkafka returns early only with a full
# batch, so the call that reads a partition's last records, or its end-of-log event, waited all
# of it: a rebalance restoring about 8,000 ledger rows took 0.5 s, the old wait, and takes 0.1 s
# with this one. A call that returns with fewer records meanwhile only makes a smaller write batch.
CONSUME_WAIT_SECONDS = 0.05
_ONE_AT_A_TIME = threading.Lock()


@dataclass
class PartitionTarget:
    """One changelog partition to read: from ``start`` up to ``end`` (both offsets inclusive) into ``db``."""

    start: int
    end: int
    db: Any  # rocksdict.Rdict of the table partition
    offset_key: bytes


class TidingsRecovery(Recovery):
    """Faust's recovery, with the active changelog partitions read first by ``restore_partitions``."""

    async def _build_offsets(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await super()._build_offsets(consumer, tps, destination, title)
        if title != "active":
            return
        targets = {}
        for tp in tps:
            end = self.active_highwaters.get(tp)
            table: Any = self.tp_to_table[tp]
            store = table.data
            if end is None or end < 0 or destination[tp] >= end or not hasattr(store, "_db_for_partition"):
                continue  # nothing to read, or not RocksDB (memory:// in tests): Faust's path
            targets[tp] = PartitionTarget(destination[tp] + 1, end, store._db_for_partition(tp.partition), store.offset_key)
        if not targets:
            return
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        deadline = time.monotonic() + BUDGET_FRACTION * self.app.conf.broker_request_timeout

        def reached_at(tp: TP, offset: int) -> None:
            if tp in destination:  # not revoked meanwhile
                destination[tp] = max(destination[tp], offset)

        def progress(tp: TP, offset: int) -> None:
            loop.call_soon_threadsafe(reached_at, tp, offset)

        started = time.monotonic()
        read = loop.run_in_executor(
            None, restore_partitions, bootstrap_of(self.app.transport), self.app.in_transaction, targets, progress, stop, deadline,
        )
        try:
            reached, rows = await asyncio.shield(read)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait([read])
            raise
        for tp, offset in reached.items():
            reached_at(tp, offset)
        elapsed = time.monotonic() - started
        left = sum(1 for tp, t in targets.items() if reached[tp] < t.end)
        log.info("restored %d changelog rows of %d partitions in %.1f s (%.0f rows/s)%s", rows, len(targets), elapsed,
                 rows / elapsed if elapsed > 0 else 0.0, f"; {left} partitions left to Faust's recovery" if left else "")


class TidingsTableManager(TableManager):
    """Faust's table manager, recovering with ``TidingsRecovery``."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = TidingsRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


def restore_partitions(
    bootstrap: str,
    read_committed: bool,
    targets: dict[TP, PartitionTarget],
    progress: Callable[[TP, int], None],
    stop: threading.Event,
    deadline: float,
) -> tuple[dict[TP, int], int]:
    """Write each target's changelog records into its database; the offset reached per partition
    (``start - 1`` if none) and the number of records written.

    A partition is done at its ``end``, or at its end of log (with ``read_committed``, its last
    stable offset): past ``end`` that means nothing at or before ``end`` can still be delivered
    (transaction markers, aborted records), so ``end`` counts as reached, as Faust's own
    recovery concludes after its timeouts ("Aborted tx until highwater"). Short of ``end`` (a
    transaction still open), the partition is left where it is, for Faust to finish.
    """
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "tidings-changelog-restore",  # never joins a group: partitions are assigned, nothing committed
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        # Prefetch up to 32 MiB while Python writes the last fetch (the default is 64 MiB), and
        # fetch again 5 ms after the queue ebbs rather than librdkafka's 1 s: with a 8 MiB queue
        # and that default, the restore stalled a second at a time (40,000 rows/s).
        "fetch.max.bytes": 32 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "queued.max.messages.kbytes": 32 * 1024,
        "fetch.queue.backoff.ms": 5,
    })
    try:
        with _ONE_AT_A_TIME:
            return read_into(consumer, targets, progress, stop, deadline)
    finally:
        consumer.close()


def read_into(
    consumer: Any, targets: dict[TP, PartitionTarget], progress: Callable[[TP, int], None], stop: threading.Event, deadline: float,
) -> tuple[dict[TP, int], int]:
    """``restore_partitions`` with a consumer given (a confluent-kafka ``Consumer`` with partition EOFs on)."""
    from confluent_kafka import KafkaError, TopicPartition

    eof_code = KafkaError._PARTITION_EOF
    by_key = {(tp.topic, tp.partition): tp for tp in targets}
    reached = {tp: t.start - 1 for tp, t in targets.items()}
    pending = set(by_key)
    rows = 0
    consumer.assign([TopicPartition(tp.topic, tp.partition, t.start) for tp, t in targets.items()])
    while pending and not stop.is_set() and time.monotonic() < deadline:
        batches: dict[tuple[str, int], Any] = {}
        last: dict[tuple[str, int], int] = {}
        for message in consumer.consume(num_messages=CONSUME_BATCH, timeout=CONSUME_WAIT_SECONDS):
            key = (message.topic(), message.partition())
            error = message.error()
            if error is not None:
                if error.code() != eof_code:
                    raise RuntimeError(f"restoring {key}: {error}")
                if key in pending:
                    tp = by_key[key]
                    if message.offset() > targets[tp].end:
                        last[key] = targets[tp].end
                    pending.discard(key)
                continue
            if key not in pending:
                continue
            offset = message.offset()
            tp = by_key[key]
            if offset > targets[tp].end:
                pending.discard(key)
                continue
            batch = batches.get(key)
            if batch is None:
                batch = batches[key] = rocksdict.WriteBatch(raw_mode=True)
            value = message.value()
            if value is None:
                batch.delete(message.key())
            else:
                batch.put(message.key(), value)
            last[key] = offset
            rows += 1
            if offset == targets[tp].end:
                pending.discard(key)
        for key, offset in last.items():
            tp = by_key[key]
            batch = batches.get(key)
            if batch is None:
                batch = rocksdict.WriteBatch(raw_mode=True)
            batch.put(targets[tp].offset_key, str(offset).encode())
            targets[tp].db.write(batch)
            reached[tp] = offset
            progress(tp, offset)
    return reached, rows
