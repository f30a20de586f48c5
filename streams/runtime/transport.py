"""Faust's aiokafka transport, with exactly-once stops, restarts and rebalances made safe (faust-streaming 0.15.x).

A graceful stop (SIGTERM) commits twice with ``start_new_transaction=False``: once from
``App._stop_consumer`` (``consumer.wait_empty()`` -> ``commit_and_end_transactions()``), and again
from ``Consumer.on_stop()``, which runs the same ``wait_empty()`` after the agents have stopped.
The first call commits every transactional producer's transaction *without beginning a new one*.
Anything still committable at the second call was sent to a producer with no open transaction,
and aiokafka refuses it: ``IllegalOperation: Not in the middle of a transaction``. The exception
then escapes ``Consumer.on_stop()``, so the consumer never stops its children, among them the
non-daemon ``AIOKafkaConsumerThread``: the worker process hangs at exit until it is killed.

Something is left for the second call whenever the worker reads a topic written in transactions
(outbound, dead-letter, delivery-status: every commit leaves a control record, a "marker", taking
one offset). ``Consumer._drain_messages`` records the offsets it skipped as a gap, but
``Consumer._add_gap(tp, r_offset + 1, offset)`` puts ``offset``, the record just received, into
the gap as well (the interval's end is made inclusive). ``_new_offset`` later adds the gap to the
acked offsets, so that record's offset is there twice, and ``consecutive_numbers`` ends the first
run at the duplicate: a commit only reaches ``offset + 1``, and the offsets acked after it wait
for the *next* commit, a transaction later than the records they produced. The delivery-status
topic, read back by its audit agent, crosses a marker in almost every batch, which made this the
common case at shutdown.

Three small overrides, one for each link of that chain:

* ``TidingsConsumer._add_gap`` keeps the record just received out of the gap, so a commit covers
  every acked offset and the final commit leaves nothing behind (and offsets are committed in the
  same transaction as the records their processing produced).
* ``TidingsProducer.commit_transactions`` opens a transaction first when a transactional producer
  has none (after a final commit), so a late commit of offsets is an offsets-only transaction
  rather than an ``IllegalOperation`` (and commits the partitions' transactions concurrently). Whatever else commits late (the periodic commit task, a
  future agent or table, a second ``commit_and_end_transactions``) stays safe.
* ``TidingsConsumer.on_stop`` never lets a failed final commit abort the consumer's stop: the
  error is logged and the consumer thread is still stopped, so the process exits instead of hanging.

A commit that fails while the worker runs (the broker went away under it) exits held, 75, at once
(``TidingsConsumer._commit_failed``), instead of Faust's crash and graceful stop (exit 1).

Revocations. Faust forgets the revoked partitions' acked and committed offsets before its handler
waits for the records in flight and makes the final commit, and that commit is skipped when a
periodic one is running; every partition is revoked at each rebalance. ``TidingsConsumer.
on_partitions_revoked`` stops the flow, waits, commits and ends every open transaction first.

Which records the agents get next: ``urgent_first`` hands over the priority topic's fetched
records before a bounded batch of the rest.

Records acked out of order. The sender's agents run several actors on one queue, so on one
partition a later record can finish (and be acked) while an earlier one is still in flight.
Faust's ``_new_offset`` commits the first run of consecutive acked offsets wherever it starts: it
compares the run's head with the committed offset only once something was committed, and lets one
offset be missing even then (for a transaction marker). A commit then passed the record in flight,
whose outcome (a dead letter, a status) joined a transaction that no later offset of the partition
ever committed: the invoice's FAILED status in the delivery-status test. ``TidingsConsumer.
_new_offset`` keeps acked offsets at or above the lowest record still in flight out of the commit.

Table state: ``TidingsConsumer._commit_offsets`` sends the queued changelog records of a transaction
before committing it, as Faust already does without transactions. Faust's ``ProducerBuffer.flush``
is not enough for that: it returns as soon as its queue is empty, while its task may still be
sending the last record it took (waiting for the transaction's lock, say). A commit that ends the
transactions (at a stop or a revocation) then went first, and the record followed outside any
transaction: ``IllegalOperation("Can't send messages while not in transaction")`` crashed the
worker. ``TidingsProducerBuffer.drain`` (called by ``TidingsProducer.drain_for_commit``, which is
all a commit needs, and by ``flush``) also waits for the record being sent.

Table state after a takeover: in exactly-once mode Faust takes a changelog's end from the last
stable offset the consumer cached from fetch responses (``AIOKafkaConsumerThread._highwaters``),
-1 for a partition this worker has not fetched yet, and then restores nothing: a worker taking over
another's partitions started with empty tables, and the timers of those partitions never fired
(the rebalance test: "timer index of partition N rebuilt: 0 entities"). ``TidingsConsumerThread.
_highwaters`` asks the broker where each changelog ends: one past its last committed record
(``changelog_ends``). Not the last stable offset itself: a changelog is written only in
transactions, so the record just before it is a transaction marker, never delivered (and after a
crash a run of aborted records precedes that), and Recovery, which waits for the record at the
highwater it is given minus one, would only notice the end after ``_slurp_changelogs`` timed out
twice (10 s per recovery).

Requests: ``count_requests`` wraps the ``send`` of each aiokafka client the worker builds (its
producers' and its consumer's) to report every request by API to ``app.on_kafka_request``, the
``tidings_kafka_requests_total`` counter: what the worker costs the brokers.

Table writes of a tick, in batches: ``ChangelogBatch`` carries the changelog records that one chunk
of a tick wrote on one partition (``streams/runtime/tables.py``, ``PartitionRows``), and takes one
place in the producer buffer instead of one per record. Faust's path costs tens of microseconds a
record (a future message, the buffer, a transactional send each), which was as much as deciding a
due timer. The buffer's task appends the records to aiokafka record batches (``send_batch``) in the
partition's open transaction. Going through the buffer keeps the order of every table write (a
record the ingest agent queued before stays before it) and keeps ``drain`` and the commit as they
are: the commit waits for the batch like for any record put before it.

Which writes a commit made durable: ``_commit_offsets`` then tells the app's ``CommitWatch``
(``streams/runtime/commits.py``), and ``commit_transactions_of`` commits the open transactions of partitions
whose offsets cannot move, for the sender's bound on what a crash can send twice.

Records lost at a start or a rebalance. ``Recovery.on_recovery_completed`` (and ``_resume_streams``)
resumes the stream partitions (``Consumer.resume_partitions``) and *then* awaits
``Consumer.perform_seek``, but with tables the flow is already active by then (the changelog
restore resumed it, or the "nothing to restore" branch did). While the seek waits for the broker,
``_drain_messages`` fetches stream records, puts them into the agents' queues and records each as
read (``_read_offset``). The seek then sets the read offsets back to the committed offsets, and the
``flow_control.resume()`` that follows clears every agent's queue (``FlowControlEvent.resume`` calls
``clear``): records delivered during the seek are gone unprocessed. The next record of the batch is
judged against the reset read offset, so ``_drain_messages`` puts the cleared records into the gap
(``_add_gap``), ``_new_offset`` counts a gap as acked, and the next commit moves past them; when
the fetcher, sought back, returns them again they are below the read offset and dropped as read.
Seen in the rebalance test: firings partition 2 committed at 4 (a marker), record 5 delivered
during the seek and cleared, record 6 arriving with the read offset reset to 4 (gap 5..5), offset
10 committed, and the firing at 5 never rendered. The same happens at every start with a backlog
(ticks or outbound records published while the worker was down).

* ``TidingsConsumer.perform_seek`` stops the flow (``Consumer.stop_flow``) at the moment it is
  called: it returns the seek's coroutine instead of being one, so the stop falls in the same step
  as Recovery's ``resume_partitions``, before the fetcher can run. Recovery resumes the flow itself
  after the seek and after clearing the queues (``flow_control.resume()``, ``consumer.resume_flow()``),
  so nothing is delivered from a stream partition between its assignment and its seek. Whatever a
  fetch still returns meanwhile meets a stopped flow, and ``Consumer.getmany`` answers that by
  seeking back to the committed offsets instead of delivering it. (Pausing the partitions during
  the seek instead is not enough: a fetch under way for an empty set of partitions is answered by
  aiokafka with the records of *every* partition, which ``getmany`` then drops unseen, and the
  next record delivered after them opened a gap over all of them.)
* ``TidingsConsumerThread.seek_to_committed`` makes that seeking back real for a partition with
  no committed offset yet (or 0): aiokafka's ``seek_to_committed`` leaves such a partition at its
  fetch position, past the records just dropped, and ``_new_offset`` does not check the head of
  the acked offsets when nothing was committed, so the first record processed after them committed
  them all (the restart test: the stop came before any firing was rendered, so the firings topic
  had no committed offsets; at the next start firings 0..4 of partition 0 were fetched while the
  flow was stopped and dropped, 6..18 rendered, and 19 was that partition's first commit). It
  seeks those partitions to where ``consumer_auto_offset_reset`` starts a new consumer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiokafka.errors import ConsumerStoppedError
from aiokafka.producer.transaction_manager import TransactionState
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from mode import Service

from streams.runtime.fetchwait import FetchPacing
from streams.runtime.guard import stop_worker

log = logging.getLogger(__name__)


class TidingsConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        # Faust builds the consumer with fetch_min_bytes 1 and fetch_max_wait 1.5 s: the broker
        # answers a fetch as soon as one record is there, so at a steady 150 events/s nearly every
        # event cost a fetch round over every assigned partition (about 70), a quarter of the
        # worker's CPU (py-spy). Asking for more bytes with a short wait gathers a few events per
        # round; the fetcher reads both from these attributes when the consumer starts.
        consumer = super()._create_worker_consumer(transport)
        count_requests(consumer._client, "consumer", self.app)
        # An app without tables (the stateless role, streams/runtime/groups.py) gets aiokafka's
        # round-robin assignor from Faust, but Faust's exactly-once transactions map each
        # assigned topic to its co-partitioned group through Faust's assignor, and crash without
        # it (KeyError in group_for_topic at the first assignment). Faust's assignor always.
        self._assignor = self.app.assignor
        consumer._partition_assignment_strategy = [self.app.assignor]
        # The first fetch is steady; FetchPacing chooses every later one (streams/runtime/fetchwait.py).
        self._fetch_pacing = FetchPacing(*getattr(self.app, "fetch_tuning", (1, 1500, 1500, 1500, 1500)))
        self._paced_fetcher: Any = None  # the fetcher whose answers FetchPacing sees (_pace_answers)
        consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = self._fetch_pacing.steady
        return consumer

    async def _fetch_records(
        self, consumer: Any, active_partitions: set[TP], timeout: float | None = None, max_records: int | None = None
    ) -> Mapping[TP, list[Any]]:
        # Faust's own, with the urgent topics' records taken first (see urgent_first).
        if not self.consumer.flow_active:
            return {}
        fetcher = consumer._fetcher
        if consumer._closed or fetcher._closed:
            raise ConsumerStoppedError()
        if fetcher is not self._paced_fetcher:
            self._pace_answers(fetcher)
        urgent: frozenset[str] = getattr(self.app, "urgent_topics", frozenset())
        with fetcher._subscriptions.fetch_context():
            records = await urgent_first(fetcher, active_partitions, urgent, timeout=self._fetch_pacing.wait_seconds(timeout),
                                         max_records=max_records)
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = self._fetch_pacing.after(records, urgent, max_records)
        return records

    def _pace_answers(self, fetcher: Any) -> None:
        """Let every fetch answer choose the next fetch's bytes and wait (``FetchPacing.fetched``: an
        empty answer makes the next fetch quiet). ``_proc_fetch_request`` is true when the answer
        added records (or an error) to the fetcher's buffer, false when it held none."""
        answer = fetcher._proc_fetch_request
        pacing = self._fetch_pacing

        async def paced(assignment: Any, node_id: int, request: Any) -> bool:
            added = await answer(assignment, node_id, request)
            fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = pacing.fetched(bool(added))
            return added

        fetcher._proc_fetch_request = paced
        self._paced_fetcher = fetcher

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_committed)

    async def _seek_to_committed(self) -> Mapping[TP, int]:
        # aiokafka's seek_to_committed leaves a partition with no committed offset (or 0) where
        # its fetch position is: after records were fetched and dropped, it does not go back.
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        uncommitted = [tp for tp, offset in committed.items() if not offset]
        if uncommitted:
            if self.app.conf.consumer_auto_offset_reset == "latest":
                await consumer.seek_to_end(*uncommitted)
            else:
                await consumer.seek_to_beginning(*uncommitted)
        return committed

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        if not self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        # Faust would take the last stable offsets cached from fetch responses: unknown (-1) for a
        # partition not fetched yet, and then it restores nothing. Ask the broker (changelog_ends).
        return await asyncio.get_running_loop().run_in_executor(None, changelog_ends, bootstrap_of(self.transport), list(partitions))


async def urgent_first(
    fetcher: Any, active: set[TP], urgent_topics: frozenset[str], *, timeout: float | None, max_records: int | None
) -> Mapping[TP, list[Any]]:
    """The records of the next batch: every fetched record of an urgent topic, then up to
    ``max_records`` of the rest.

    Faust delivers one batch to the agents before it asks for the next, and aiokafka fills a
    bounded batch partition by partition in the order the partitions were fetched. A password
    reset that reached the priority topic while a batch of a few hundred queued mails was being
    delivered waited for all of them, and a bounded batch could still be filled by the outbound
    partitions alone: at 1,000 mails/s the priority lane's records reached its agent in clumps,
    one per batch, 1-2.6 s after they were written (the sender benchmark). Asked first and
    without a bound, they wait for at most the batch in delivery (``TIDINGS_FETCH_MAX_RECORDS``).
    """
    urgent = {tp for tp in active if tp.topic in urgent_topics}
    if urgent:
        records = dict(await fetcher.fetched_records(urgent, timeout=0))
        rest = active - urgent
        if records:
            if rest:  # an empty set would mean every partition to aiokafka
                records.update(await fetcher.fetched_records(rest, timeout=0, max_records=max_records))
            return records
    # Nothing urgent fetched yet: wait for a record of any active partition, urgent or not.
    result: Mapping[TP, list[Any]] = await fetcher.fetched_records(active, timeout=timeout, max_records=max_records)
    return result


class TidingsConsumer(aiokafka_driver.Consumer):
    livelock_check_seconds = 1.0  # the least interval of Faust's check that every partition moves
    slow_commit_seconds = 1.0  # a commit this long is logged (_log_slow_commit)
    slow_commit_log_seconds = 10.0
    _slow_commit_logged = -math.inf
    _slow_commits = 0
    on_commit_failure: Callable[[BaseException, str], None] = staticmethod(stop_worker)

    def _new_consumer_thread(self) -> TidingsConsumerThread:
        return TidingsConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @Service.task
    async def _commit_livelock_detector(self) -> None:
        """Faust's check that every assigned partition still moves, at most once a second.

        Faust runs it every 2.5 commit intervals: with a commit every 40 ms, ten times a second
        over every assigned partition (about a hundred), for warnings whose thresholds are
        minutes long.
        """
        interval = max(self.commit_interval * 2.5, self.livelock_check_seconds)
        await self.sleep(interval)
        async for _ in self.itertimer(interval, name="livelock"):
            if not self.app.rebalancing:
                await self.verify_all_partitions_active()

    def perform_seek(self) -> Awaitable[None]:  # type: ignore[override]
        # Not a coroutine function on purpose: the flow stops when this is *called*. Recovery
        # resumes the stream partitions and calls this in the same step, with the flow already
        # active; it resumes the flow itself once the seek is done and the queues are cleared.
        self.stop_flow()
        return super().perform_seek()

    def _new_offset(self, tp: TP) -> int | None:
        # Never past a record still in flight (the module docstring: "Records acked out of order").
        floor = min((m.offset for m in self._unacked_messages if m.tp == tp and not m.acked), default=None)
        acked = self._acked[tp]
        if floor is None or max(acked, default=-1) < floor:
            return super()._new_offset(tp)
        waiting = [offset for offset in acked if offset >= floor]
        acked[:] = [offset for offset in acked if offset < floor]
        try:
            return super()._new_offset(tp) if acked else None
        finally:
            acked.extend(waiting)
            acked.sort()

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust's gap bookkeeping, without rebuilding the partition's tree at every gap.

        Called as _add_gap(tp, r_offset + 1, offset) by _drain_messages, where ``offset`` is a
        record being delivered (acked once processed), not part of the gap: hence ``offset_to - 1``.

        Gaps are the offsets no record is delivered for: on the outbound and status topics, the
        transaction markers of every commit (on compacted topics, records compacted away). Faust
        merges the overlaps of the whole tree after each insertion (sort and rebuild, O(n log n)),
        and a partition's tree only shrinks when its records are acked: with a sender backlog
        (mails read ahead, waiting for the quota) every marker read cost a rebuild of hundreds of
        intervals. Offsets arrive in order, so a new gap overlaps nothing already there except
        after a seek back; the tree is merged then only, which leaves it exactly as Faust's would be.
        """
        offset_to -= 1
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed + 1)
        if offset_from > offset_to:
            return
        gaps = self._gap[tp]
        overlapping = gaps.overlaps(offset_from, offset_to + 1)  # intervaltree intervals exclude the end
        gaps.addi(offset_from, offset_to + 1)
        if overlapping:
            gaps.merge_overlaps()

    async def _commit_offsets(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        watch = getattr(self.app, "commits", None)  # streams/runtime/commits.py
        upto = watch.snapshot() if watch is not None else 0
        started = time.perf_counter()
        if self.in_transaction:
            # Table changelog records are queued (send_soon) and sent by a background task; Faust
            # flushes that queue before a commit only without transactions. Unflushed, they land
            # in the *next* transaction (so a crash in between loses state whose input offset
            # is committed), and after the final commit of a graceful stop they are sent outside
            # any transaction: IllegalOperation("Can't send messages while not in transaction").
            # TidingsProducer.drain_for_commit also waits for the record the buffer's task is sending.
            await self.app.producer.drain_for_commit()  # type: ignore[attr-defined]  # a TidingsProducer (TidingsTransport)
        try:
            committed = await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)
        except Exception as e:
            self._commit_failed(e, f"the commit of {len(offsets)} partitions")
            raise
        seconds = time.perf_counter() - started
        if committed and watch is not None:
            # Faust committed the transaction of every partition number it sent offsets for.
            watch.committed({tp.partition for tp in offsets}, upto)
            watch.on_commit_seconds(seconds)
        if seconds >= self.slow_commit_seconds:
            self._log_slow_commit(seconds, len(offsets))
        return committed

    def _log_slow_commit(self, seconds: float, partitions: int) -> None:
        """A warning for a commit that held every mail of its partitions for a second or more.

        mode's own "Timer commit is overlapping" warning says so too, but is dropped for the commit
        timers (``runtime.app.QuietCommitTimers``): a commit outlasting its 40 ms is normal under
        load. One that lasts seconds is not, and the e2e benchmark's stalled phase left nothing in
        the log to say where the time went. At most one warning in ``slow_commit_log_seconds``, with
        the count of the others.
        """
        now = time.monotonic()
        self._slow_commits += 1
        if now - self._slow_commit_logged < self.slow_commit_log_seconds:
            return
        log.warning("a commit of %d partitions took %.1f s (%d commits of %.0f s or more since the last such "
                    "warning; tidings_commit_seconds)", partitions, seconds, self._slow_commits, self.slow_commit_seconds)
        self._slow_commit_logged, self._slow_commits = now, 0

    async def commit_transactions_of(self, partitions: Iterable[int], topic: str) -> set[int]:
        """Commit the open transactions of these partition numbers now, moving no offset.

        For ``CommitWatch.waiting_longer_than`` (``streams/runtime/commits.py``): table writes that must
        become durable while the partition's offsets cannot move. Other agents' writes on the same
        partition number commit with them, ahead of their input offsets: if the worker then dies,
        those inputs are processed again and write the same records once more, which the ledger
        (mails) and the idempotent state updates absorb. Returns the partitions committed.
        """
        if not self.in_transaction:
            await self.app.producer.flush()
            return set(partitions)  # at-least-once: nothing transactional, flushed is durable
        await self.app.producer.drain_for_commit()  # type: ignore[attr-defined]  # a TidingsProducer (TidingsTransport)
        group = self.app.assignor.group_for_topic(topic)
        done = set()
        for partition in partitions:
            try:
                # Faust types app.producer as ProducerT; TidingsTransport makes it a TidingsProducer, which adds this method.
                if await self.app.producer.commit_open_transaction(f"{self.app.conf.id}-{group}-{partition}"):  # type: ignore[attr-defined]
                    done.add(partition)
            except Exception as e:
                self._commit_failed(e, f"the commit of partition {partition}'s open transaction")
                raise
        return done

    def _commit_failed(self, error: BaseException, where: str) -> None:
        """A commit that raised left its transactions in an unknown state: exit held (75) now.

        Faust would crash the consumer's service and stop gracefully (exit 1), trying a final commit
        on a producer whose transaction manager may already be in a fatal state. Found in CI: a
        broker restart closed the connection under AddOffsetsToTxn's coordinator lookup, aiokafka's
        sender routine died with ``KafkaError`` and the worker exited 1, which a supervisor reads as
        a bug. Exiting now aborts the open transactions (the broker times them out, or the next
        producer with the same transactional id fences them), and every record since the last
        commit is read again after the restart (``guard.py``: held). A worker already stopping
        keeps stopping: its final commit's failure is logged by ``on_stop``.
        """
        if not self.should_stop:
            self.on_commit_failure(error, where)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Finish the records in flight and commit them before Faust forgets the partitions.

        Faust's ``Consumer.on_partitions_revoked`` drops the revoked partitions' acked and committed
        offsets first, and only then runs the app's handler, which waits for the records in flight
        and commits (``App._on_partitions_revoked``). Under Kafka's eager rebalancing every partition
        is revoked, so the records that finished during that wait had no bookkeeping to commit from:
        their offsets stayed uncommitted and their outputs stayed in transactions the final commit
        did not end (aiokafka's "Invalid state transition IN_TRANSACTION -> IN_TRANSACTION" at the
        next assignment), which the partitions' next owner aborted. For the sender that lost the
        ``sent`` of mails whose ``sending`` an earlier commit had made durable, and the next owner
        sent them again (18 mails in the sender benchmark, three workers at 1,000/s).
        So the same stop, wait and commit run here first, while the bookkeeping holds; the commit
        ends every transaction, those of partitions whose offsets did not move included.
        """
        if not self.should_stop and self.assignment():
            self.stop_flow()
            self.app.flow_control.suspend()
            self.pause_partitions(self.assignment())
            self.app.flow_control.clear()  # queued records not started: the next owner reads them
            await self.wait_empty()
            # wait_empty's final commit is skipped when a periodic one is under way (Faust's
            # commit() waits for it and returns): this one then commits what was acked since.
            await self.commit(start_new_transaction=False)
            await self.end_open_transactions()
        await super().on_partitions_revoked(revoked)

    async def end_open_transactions(self) -> None:
        """Commit (no offsets) every transaction a final commit left open: Faust ends only those of
        partitions whose offsets moved. Their writes become durable ahead of their inputs' offsets,
        as in ``commit_transactions_of``, which the ledger and the idempotent state updates absorb."""
        if not self.in_transaction:
            return
        try:
            await self.app.producer.drain_for_commit()  # type: ignore[attr-defined]  # a TidingsProducer
            ended = await self.app.producer.end_open_transactions()  # type: ignore[attr-defined]
        except Exception as e:
            self._commit_failed(e, "the end of the transactions a final commit left open")
            raise
        if ended:
            log.info("ended %d transaction(s) whose partitions' offsets did not move: %s", len(ended), ", ".join(sorted(ended)))

    async def on_stop(self) -> None:
        try:
            await super().on_stop()
        except Exception:
            # Keep stopping: the consumer's children (its thread) must stop or the process hangs.
            # Offsets not committed are processed again on the next start (the ledger dedupes mail).
            log.exception("the final commit at shutdown failed; stopping anyway")


class TidingsProducerBuffer(ProducerBuffer):
    """Faust's buffer of ``send_soon`` messages (table changelog records), drained up to a point.

    ``drain`` waits for every message put before it was called, including the one the buffer's
    task is sending, and no more: what the commit must carry. Waiting for an empty buffer is
    unbounded under load, since the agents keep writing while it waits (measured in the sender
    benchmark: a flush before a commit took 8.7 s with one message pending when it began), and
    every permit of the sender waits on that commit.

    ``max_messages`` is the size at which Faust's conductor stops delivering records to agents
    until the buffer ebbs (``wait_until_ebb``), password resets included. Faust's 100 is two
    changelog writes for each of 50 mails; the sender benchmark held 500-900 at 120 mails/s and
    logged "producer buffer full" 45 times a run. Raised, so the brake is for a stuck producer.
    """

    max_messages = 2000
    _put = 0
    _sent = 0
    on_failure: Callable[[BaseException, str], None] = staticmethod(stop_worker)
    max_merged = 500  # entries sent together (_take_following_batches): bounds one send's records

    def put(self, fut: Any) -> None:
        self._put += 1
        super().put(fut)

    async def _send_pending(self, fut: Any) -> None:
        taken = 1
        records = 1
        try:
            if isinstance(fut, ChangelogBatch):
                batches = [fut, *self._take_following_batches()]
                taken = len(batches)
                records = sum(map(len, batches))
                # Faust types the buffer's app Optional (Producer.__init__ sets it) and its producer as ProducerT;
                # it is the TidingsProducer, which adds send_changelog_batch.
                await self.app.producer.send_changelog_batch(*batches)  # type: ignore[union-attr]
            else:
                await super()._send_pending(fut)
        except Exception as e:
            # Records of inputs the guard already counted as handled: their offsets must not
            # commit. Faust would crash the buffer's service and stop gracefully, with a final
            # commit of those offsets (exit 1); exiting now aborts the open transactions instead,
            # and the inputs are read again after the restart (guard.py: held).
            self.on_failure(e, f"the producer buffer, sending {records} records")
            raise
        finally:
            self._sent += taken
            self.message_sent.set()

    def _take_following_batches(self) -> list[ChangelogBatch]:
        """The ``ChangelogBatch`` entries queued right behind the one being sent, taken out now.

        aiokafka accepts one record batch per topic partition until the sender takes it
        (``MessageAccumulator.add_batch`` waits for that, up to the linger), so entries sent one at
        a time queue up behind each other under load; sent together they make one record batch
        per topic partition. Only the run of batches at the head is taken: Faust's own entries
        (table writes through ``faust.Table``) keep their place in the order.
        """
        queue = self.pending._queue  # type: ignore[attr-defined]  # asyncio.Queue's deque: peeking has no public API
        taken: list[ChangelogBatch] = []
        while queue and isinstance(queue[0], ChangelogBatch) and len(taken) < self.max_merged:
            taken.append(self.pending.get_nowait())
        return taken

    async def drain(self) -> None:
        target = self._put
        while self._sent < target and self.state == "running":
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
            except asyncio.TimeoutError:
                pass


class TidingsProducer(aiokafka_driver.Producer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._drainable_buffer = TidingsProducerBuffer(loop=self.loop, beacon=self.beacon)
        self._drainable_buffer.app = self.app
        self.buffer = self._drainable_buffer

    def _new_producer(self, transactional_id: str | None = None) -> Any:
        producer = super()._new_producer(transactional_id)
        count_requests(producer.client, "producer", self.app)
        return producer

    def _settings_extra(self) -> Mapping[str, Any]:
        """Every producer Faust builds (the transactional ones too) retries after the configured backoff.

        A partition's commit is AddOffsetsToTxn, TxnOffsetCommit and EndTxn. When its transaction
        wrote no records, AddOffsetsToTxn is the transaction's first request and often reaches the
        broker while the broker still writes the previous transaction's markers: the broker answers
        CONCURRENT_TRANSACTIONS and aiokafka retries after ``retry_backoff_ms``, 100 ms by default
        (it shortens the wait only for AddPartitionsToTxn). Measured at 150 events/s with a commit
        every 40 ms: about one commit in ten took 105-115 ms instead of 5-15, and every mail of
        the partition waited for it (README, Performance: Latency).
        """
        return {**super()._settings_extra(), "retry_backoff_ms": getattr(self.app, "producer_retry_backoff_ms", 100)}

    async def flush(self) -> None:
        # Not super().flush(): Faust's starts with ProducerBuffer.flush, which returns only once
        # the buffer is empty, and under load the agents refill it faster than it empties (one run
        # of 2,000 events: a commit waited 14 s in it, so nothing became visible until the backlog
        # was gone). drain() waits for exactly what was put before the commit began.
        await self._drainable_buffer.drain()
        if self._producer is not None:
            await self._producer.flush()
        for producer in self._transaction_producers.values():
            await producer.flush()

    async def drain_for_commit(self) -> None:
        """Before a transactional commit: every record put in the buffer so far is in its
        producer's open transaction (appended to the producer's accumulator), no more.

        Not ``flush``: committing a transaction already sends what the transaction holds
        (aiokafka's sender calls ``flush_for_commit``, which closes the lingering batches and sends
        them at once), while flushing each producer first waited for its batches to linger and be
        acknowledged, one producer after the other, before the commit could begin.
        """
        await self._drainable_buffer.drain()

    async def commit_transactions(
        self,
        tid_to_offset_map: Mapping[str, Mapping[TP, int]],
        group_id: str,
        start_new_transaction: bool = True,
    ) -> None:
        """Faust's commit, with every partition's transaction committed at the same time.

        Faust commits them one after the other, each a few round trips to the transaction
        coordinator (offsets, end of transaction, a new one), so a commit of four partitions took
        four times as long and every mail waited for all of them. They are independent: one
        transactional producer per partition. A transaction that a final commit already ended is
        opened first, so a late commit of offsets is an offsets-only transaction rather than an
        ``IllegalOperation`` (see the module docstring).
        """
        async def commit(transactional_id: str, offsets: Mapping[TP, int]) -> None:
            async with self._trn_locks[transactional_id]:
                producer = self._transaction_producers.get(transactional_id)
                if producer is None:
                    log.warning("commit invoked for unknown transaction %s", transactional_id)
                    return
                if _transaction_ended(producer):
                    log.info("committing offsets for %s after its transaction ended: in a new one", transactional_id)
                    await producer.begin_transaction()
                await producer.send_offsets_to_transaction(offsets, group_id)
                await producer.commit_transaction()
                if start_new_transaction:
                    await producer.begin_transaction()

        await asyncio.gather(*(commit(tid, offsets) for tid, offsets in tid_to_offset_map.items()))

    async def send_changelog_batch(self, *batches: ChangelogBatch) -> None:
        """Append ``ChangelogBatch`` entries to their partitions' open transactions (or, without
        transactions, to the producer), as aiokafka record batches: one per topic partition for
        all the entries given, in their order."""
        # (transactional id or None) -> (topic, partition) -> records, in the entries' order.
        merged: dict[str | None, dict[tuple[str, int], list[tuple[bytes | None, bytes | None, Headers | None]]]] = {}
        for batch in batches:
            for topic, records in batch.records.items():
                tid = None
                if self.app.in_transaction:
                    # Faust's own choice of transaction for a record on (topic, partition), or the input's.
                    group = (
                        self.app.assignor.group_for_topic(batch.source_topic)
                        if batch.input_transaction and batch.source_topic is not None else _group(self.app.assignor, topic, batch.source_topic)
                    )
                    tid = f"{self.app.conf.id}-{group}-{batch.partition}"
                merged.setdefault(tid, {}).setdefault((topic, batch.partition), []).extend(records)
        for tid, by_tp in merged.items():
            if tid is None:
                for (topic, partition), records in by_tp.items():
                    await _send_batches(self._ensure_producer(), topic, partition, records)
                continue
            lock = self._trn_locks.get(tid)
            producer = self._transaction_producers.get(tid)
            if lock is None or producer is None:
                raise ProducerSendError(f"No transaction producer found for : {tid}")
            async with lock:
                for (topic, partition), records in by_tp.items():
                    await _send_batches(producer, topic, partition, records)

    async def end_open_transactions(self) -> list[str]:
        """Commit every transactional producer's open transaction and begin none: the transactional ids ended."""
        ended = []
        for transactional_id in list(self._transaction_producers):
            async with self._trn_locks[transactional_id]:
                producer = self._transaction_producers.get(transactional_id)
                if producer is not None and producer._txn_manager.state is TransactionState.IN_TRANSACTION:
                    await producer.commit_transaction()
                    ended.append(transactional_id)
        return ended

    async def commit_open_transaction(self, transactional_id: str) -> bool:
        """Commit one transactional producer's open transaction (no offsets) and begin the next."""
        async with self._trn_locks[transactional_id]:
            producer = self._transaction_producers.get(transactional_id)
            if producer is None or producer._txn_manager.state is not TransactionState.IN_TRANSACTION:
                return False
            await producer.commit_transaction()
            await producer.begin_transaction()
            return True


def bootstrap_of(transport: Any) -> str:
    """The broker list of Faust's transport, for a confluent-kafka client."""
    # Faust's TransportT declares no default_port; the aiokafka driver's Transport has it (9092).
    return ",".join(aiokafka_driver.server_list(transport.url, transport.default_port))


def changelog_ends(bootstrap: str, partitions: list[TP], tail: int = 64, timeout: float = 10.0) -> dict[TP, int]:
    """For each partition, one past its last committed record: what Faust's recovery reads up to.

    Not the last stable offset itself: under exactly-once every transaction ends with a commit
    marker, which takes an offset but is never delivered, so a recovery waiting for the record
    before the LSO waits for a marker, and Faust gives up on it only after two 5-second timeouts
    ("Aborted tx until highwater"). Reading the last ``tail`` offsets (read_committed: markers,
    aborted and still-open records are not delivered, the end of the partition is its LSO) finds
    the last real record; a partition with none there (a crash aborts a transaction of many
    records) is read again further back, up to 64 times ``tail``. Beyond that, the high watermark
    is returned and Faust's own fallback applies.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "tidings-changelog-ends",  # never joins a group: partitions are assigned, nothing committed
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        # The end of a partition is known from a fetch that finds nothing more, which the broker
        # holds for this long (librdkafka's 500 ms by default): a rebalance's new owner of two
        # ledger partitions waited 0.54 s here, for a tail it had read in milliseconds.
        "fetch.wait.max.ms": 10,
    })
    try:
        high: dict[tuple[str, int], int] = {}
        for tp in partitions:
            _, high[(tp.topic, tp.partition)] = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout, cached=False
            )
        last: dict[tuple[str, int], int] = {}
        todo = {key for key, end in high.items() if end > 0}
        window = tail
        while todo and window <= 64 * tail:
            pending = set(todo)
            consumer.assign([TopicPartition(t, p, max(0, high[(t, p)] - window)) for t, p in pending])
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None:
                    continue
                key = (message.topic(), message.partition())
                error = message.error()
                if error is None:
                    # confluent-kafka types topic/partition/offset Optional (a hand-built Message); a polled record has all three.
                    last[key] = message.offset()  # type: ignore[index, assignment]
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(key)
                else:
                    raise RuntimeError(f"reading the end of {key}: {error}")
            consumer.unassign()
            todo = {key for key in todo if key not in last and high[key] > window}
            window *= 8
        return {tp: last.get((tp.topic, tp.partition), high[(tp.topic, tp.partition)] - 1) + 1 for tp in partitions}
    finally:
        consumer.close()


Headers = list[tuple[str, bytes]]


class ChangelogBatch:
    """Records for one partition number, queued as one entry of the producer buffer.

    Table writes (changelog records) of a tick chunk or of one event, and the outputs of one input
    record (``agents.TransactionalWriter``): each takes one place in the buffer and goes out as
    aiokafka record batches, instead of one future message and one transactional send a record.
    """

    __slots__ = ("input_transaction", "partition", "records", "source_topic")

    def __init__(self, partition: int, source_topic: str | None = None, *, input_transaction: bool = False) -> None:
        self.partition = partition
        # The input whose transaction these writes belong to: its co-partitioned group names the
        # transaction when a changelog is not (yet) in the assignor's topic groups (a changelog
        # created after the group's last assignment).
        self.source_topic = source_topic
        # Outputs of an input record always join the input's transaction (streams/runtime/emit.py
        # says why), whether or not their topic is in the assignor's groups.
        self.input_transaction = input_transaction
        self.records: dict[str, list[tuple[bytes | None, bytes | None, Headers | None]]] = {}  # topic -> records

    def add(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None) -> None:
        records = self.records.get(topic)
        if records is None:
            records = self.records[topic] = []
        records.append((key, value, headers))

    def __len__(self) -> int:
        return sum(len(r) for r in self.records.values())

    def take(self) -> ChangelogBatch:
        """A batch with the records added so far; this one starts empty again."""
        taken = ChangelogBatch(self.partition, self.source_topic, input_transaction=self.input_transaction)
        taken.records, self.records = self.records, {}
        return taken


# Runs at least this long go out as record batches of their own (send_batch); shorter ones join the
# partition's open batch record by record (send). aiokafka takes a new record batch for a topic
# partition only once the sender has taken the previous one, up to the linger later: entries of a
# few records each sent as batches waited that long one after the other (565 queued entries, 2.8 s
# at a 5 ms linger), while appending a record costs about as much as building it into a batch.
BATCH_OF_ITS_OWN = 64


async def _send_batches(
    producer: Any, topic: str, partition: int, records: list[tuple[bytes | None, bytes | None, Headers | None]],
) -> None:
    if len(records) < BATCH_OF_ITS_OWN:
        for key, value, headers in records:
            # The delivery future is not awaited: a failed batch fails the transaction's commit.
            await producer.send(topic, value=value, key=key, partition=partition, headers=headers or None)
        return
    builder = producer.create_batch()
    for key, value, headers in records:
        if builder.append(key=key, value=value, timestamp=None, headers=headers or []) is None:  # full
            await producer.send_batch(builder, topic, partition=partition)
            builder = producer.create_batch()
            builder.append(key=key, value=value, timestamp=None, headers=headers or [])  # an empty batch takes any record
    if builder.record_count():
        # Closed, as a full one already is: aiokafka lets an open batch linger (Settings.producer_linger_seconds:
        # until the commit), and the partition's next batch of its own waits for it to be taken. A tick's
        # 10,000 firings then rendered at one batch per partition and linger (8.3 s against 3.6 s).
        builder.close()
        await producer.send_batch(builder, topic, partition=partition)


def count_requests(client: Any, kind: str, app: Any) -> None:
    """Report every request ``client`` (an aiokafka client) sends to ``app.on_kafka_request(kind, api)``.

    The request's class names its API (``EndTxnRequest``: ``EndTxn``). Wrapped on the instance, not
    on aiokafka's class, so only the worker's own clients are counted. The app's hook is looked up
    at each request: the composition root sets it after the clients may have been built.
    """
    send = client.send

    async def counted(node_id: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        app.on_kafka_request(kind, _api_name(type(request)))
        return await send(node_id, request, *args, **kwargs)

    client.send = counted


_API_NAMES: dict[type, str] = {}


def _api_name(request_type: type) -> str:
    name = _API_NAMES.get(request_type)
    if name is None:
        name = _API_NAMES[request_type] = request_type.__name__.partition("_v")[0].removesuffix("Request")
    return name


def _group(assignor: Any, topic: str, fallback: str | None) -> int:
    try:
        return int(assignor.group_for_topic(topic))
    except KeyError:
        if fallback is None:
            raise
        return int(assignor.group_for_topic(fallback))


def _transaction_ended(producer: Any) -> bool:
    """READY: the last transaction was committed or aborted and none is open (aiokafka has no public
    accessor). Error states are left alone: Faust's own handling of them (fencing) is unchanged."""
    return bool(producer._txn_manager.state is TransactionState.READY)


class TidingsTransport(aiokafka_driver.Transport):
    Consumer = TidingsConsumer
    Producer = TidingsProducer
