"""The Faust app Tidings runs on, and the few ways the composition root wires stages into it.

``new_app(settings)`` configures faust-streaming once (exactly-once, RocksDB, the transport of
``streams/runtime/transport.py``); ``Wiring`` is all the composition root (``streams/app.py``)
uses of it: guarded agents, timers, partition hooks, a producer for the ticks, table rows, web
pages. No stage module sees ``faust.App``.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams.errors import ConfigurationError
from streams.runtime.agents import TransactionalWriter, guarded_agent, raw_topic
from streams.runtime.commits import CommitWatch
from streams.runtime.emit import Outputs, RecordContext
from streams.runtime.guard import Guard, Outcome
from streams.runtime.restore import TidingsTableManager
from streams.runtime.status import WorkerView, worker_view
from streams.runtime.tables import LedgerExpiry, LedgerRows, StateTables, create_tables, ledger_table
from streams.runtime.transport import TidingsTransport
from streams.settings import Settings

log = logging.getLogger(__name__)

PageHandler = Callable[..., Awaitable[tuple[int, str, "str | bytes"]]]


def freeze_startup_objects() -> None:
    """Leave what the worker has loaded so far out of every later garbage collection.

    Modules, schemas, packs, templates and tenants live as long as the process, and a full
    collection walks all of them: about 90 ms in a running worker (the "closing db" lines of its
    revoke log, one table apart). Faust runs one for every table on every rebalance
    (``RocksDB.revoke_partitions``, to release the revoked partitions' databases), nine in a row
    with the event loop blocked, and Python runs them as allocations pile up. Objects made from
    here on (tables, their databases, caches) are collected as before. Measured (the sender
    benchmark's join, a second worker joining one sending 1,000 mails/s, three alternating pairs):
    the longest time without a send 1.33-1.39 s against 2.13-2.20 s.
    """
    gc.collect()  # what is garbage now is freed, not frozen
    gc.freeze()


class TidingsApp(faust.App):
    """A Faust app that runs ``before_agents`` before its consumer subscribes (topics exist,
    tenants read) and then freezes what it loaded (``freeze_startup_objects``), ``after_stop``
    after it stopped, and whose graceful stop always ends its exactly-once transactions cleanly
    (``streams/runtime/transport.py``)."""

    commits: CommitWatch  # fed by the consumer's commits (streams/runtime/transport.py)
    # fetch_min_bytes and the steady, busy, idle and quiet fetch waits of the worker's consumer (runtime/fetchwait.py)
    fetch_tuning: tuple[int, int, int, int, int] = (1, 1500, 1500, 1500, 1500)
    producer_retry_backoff_ms: int = 100  # aiokafka's default; new_app sets the configured one (transport.py)
    urgent_topics: frozenset[str] = frozenset()  # fetched first (transport.urgent_first); Wiring.agent(urgent=True)
    # Called with (client, api) for every request a Kafka client of the worker sends (transport.count_requests).
    on_kafka_request: Callable[[str, str], None] = staticmethod(lambda client, api: None)
    before_agents: Callable[[], Awaitable[None]] | None = None
    after_stop: Callable[[], Awaitable[None]] | None = None

    async def on_first_start(self) -> None:
        if self.before_agents is not None:
            await self.before_agents()
        freeze_startup_objects()
        await super().on_first_start()

    def _new_transport(self) -> TidingsTransport:
        url = self.conf.broker_consumer[0]
        if url.scheme not in ("kafka", "aiokafka"):
            raise ConfigurationError(f"Tidings runs on Kafka (kafka://), not {url}")
        return TidingsTransport(self.conf.broker_consumer, self)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        if self.after_stop is not None:
            await self.after_stop()

    def _new_web(self) -> Any:
        """Faust's web driver with none of Faust's own pages: only what Tidings registers is served.

        Faust serves ``/table/<table>/<key>/`` (any table row: a customer's name and address, a
        ledger entry), ``/router/``, a status index at ``/`` and, in debug mode, ``/graph`` and
        statistics, on the same port as ``/unsubscribe``, which operators expose to the internet.
        """
        from faust.web.drivers import by_url

        base = by_url(self.conf.web)
        closed = type("ClosedWeb", (base,), {
            "default_blueprints": [], "production_blueprints": [], "debug_blueprints": [], "optional_blueprints": [],
        })
        return closed(self)


class QuietCommitTimers(logging.Filter):
    """Drops mode's "Timer commit is overlapping" warnings for the timers that follow the commits.

    mode warns whenever a timer's work outlasts its interval. The commit timer's interval is a
    gap between commits, not a deadline: under load a commit takes longer than 40 ms, every time,
    and the worker logged a warning for each (about a hundred in one e2e benchmark run, for
    nothing wrong). How long commits take is ``tidings_commit_seconds``. Other timers still warn.
    """

    TIMERS = frozenset({"commit", "livelock", "tidings.commit_waiting_outcomes"})

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            isinstance(record.msg, str) and record.msg.startswith("Timer %s is overlapping")
            and isinstance(record.args, tuple) and bool(record.args) and record.args[0] in self.TIMERS
        )


def new_app(settings: Settings) -> TidingsApp:
    quiet = logging.getLogger("mode.timers")
    if not any(isinstance(f, QuietCommitTimers) for f in quiet.filters):
        quiet.addFilter(QuietCommitTimers())
    app = TidingsApp(
        settings.app_id,
        broker=settings.broker_url,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        processing_guarantee=settings.processing_guarantee,
        broker_commit_interval=settings.commit_interval_seconds,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_max_request_size=max(settings.max_record_bytes + 64 * 1024, 1_048_576),
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        # A bound on the records delivered to the agents before the next batch is asked for: what
        # a record of an urgent topic may wait behind (transport.urgent_first).
        broker_max_poll_records=settings.fetch_max_records,
        # Faust's default (0) sends a produce request per record batch as soon as it has one: at
        # a few hundred events a second that is a request per record, and the socket writes
        # alone took a fifth of the worker (py-spy). Under exactly-once the batches linger until
        # the commit sends them (Settings.producer_linger_seconds).
        producer_linger=settings.producer_linger_seconds,
        # Faust's 16 KiB batch holds three rendered mails: at saturation a produce request per few
        # mails (README, Configuration: TIDINGS_PRODUCER_BATCH_BYTES).
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_compression_type=None if settings.producer_compression == "none" else settings.producer_compression,
        # No standby replicas: faust-streaming 0.15 seeks a standby changelog partition to a
        # missing (None) offset when it was not among the newly assigned ones, and its recovery
        # crashes ("Offset must be a positive integer"). A worker taking over a partition
        # restores it from the changelog instead (see the benchmark's restart figure).
        table_standby_replicas=0,
        # Faust refuses to recover a table whose local store is ahead of its changelog. Under
        # exactly-once that is normal after a crash: the store kept writes whose transaction was
        # aborted (streams/runtime/tables.py says which tables keep them and which restore).
        recovery_consistency_check=False,
        TableManager=TidingsTableManager,  # restores with confluent-kafka first (streams/runtime/restore.py)
    )
    app.commits = CommitWatch()
    app.fetch_tuning = (settings.fetch_min_bytes, settings.fetch_max_wait_ms,  # streams/runtime/transport.py
                        settings.fetch_busy_max_wait_ms, settings.fetch_idle_max_wait_ms, settings.fetch_quiet_max_wait_ms)
    app.producer_retry_backoff_ms = settings.producer_retry_backoff_ms  # TidingsProducer._settings_extra
    return app


class Wiring:
    """What the composition root may do with the app: declare, register, hook."""

    def __init__(self, app: TidingsApp, settings: Settings, outputs: dict[str, str], dead_letter_topic: str,
                 on_dead_letter: Callable[[Any], None], count: Callable[[str, Outcome], None],
                 reports: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.settings = settings
        self.outputs = Outputs(
            topics=outputs,
            dead_letter_topic=dead_letter_topic,
            max_record_bytes=settings.max_record_bytes,
            writer=TransactionalWriter(app),
            on_dead_letter=on_dead_letter,
            reports=reports,
        )
        self._count = count
        self._ledger: MutableMapping[str, Any] | None = None

    @property
    def commits(self) -> CommitWatch:
        return self.app.commits

    def agent(
        self,
        stage: str,
        topics: Sequence[str],
        name: str,
        handler: Callable[[RecordContext], Awaitable[None]],
        *,
        concurrency: int = 1,
        before: Callable[[], Awaitable[None]] | None = None,
        urgent: bool = False,
    ) -> None:
        """``urgent``: its topics' fetched records go to the agents before any other topic's
        (``transport.urgent_first``): for the records a person is waiting for."""
        if urgent:
            self.app.urgent_topics = self.app.urgent_topics | frozenset(topics)
        guard = Guard(stage, self.outputs, count=self._count)
        guarded_agent(self.app, topics, name, guard, handler, concurrency=concurrency, before=before)

    def tables(self, names: Iterable[str]) -> StateTables:
        """The entity tables (one per name) and the timers table, co-partitioned with the inputs."""
        return create_tables(self.app, self.settings, names)

    def ledger(self) -> MutableMapping[str, Any]:
        """The delivery ledger's rows (message id -> entry), written on the current record's
        partition (``LedgerRows``); a refused write holds the record."""
        if self._ledger is None:
            self._ledger = LedgerRows.of(ledger_table(self.app, self.settings), self.app)
        return self._ledger

    def ledger_expiry(self) -> LedgerExpiry:
        """Ages the ledger out, a slice per tick (``LedgerExpiry.sweep``)."""
        return LedgerExpiry(self.ledger(), dt.timedelta(days=self.settings.ledger_retention_days))

    def on_kafka_request(self, fn: Callable[[str, str], None]) -> None:
        """``fn(client, api)`` for every request the worker's Kafka clients send (``producer`` or
        ``consumer``; ``Produce``, ``Fetch``, ``EndTxn``...), from the thread that sends it."""
        self.app.on_kafka_request = fn

    def every(self, seconds: float, fn: Callable[[], Awaitable[None]], *, name: str, on_leader: bool = False) -> None:
        self.app.timer(seconds, on_leader=on_leader, name=name)(fn)

    def on_assigned(self, fn: Callable[[set[tuple[str, int]]], Awaitable[None] | None]) -> None:
        """``fn(assignment)`` after every rebalance, with every (topic, partition) this worker holds."""
        async def hook(sender: Any, tps: Any, **kwargs: Any) -> None:
            result = fn({(tp.topic, tp.partition) for tp in self.app.consumer.assignment()})
            if result is not None:
                await result

        self.app.on_partitions_assigned.connect(hook)  # type: ignore[arg-type]  # mode's signal type wants signal=

    def status(self) -> WorkerView:
        """Assignment, restore progress and lag as the worker knows them (no Kafka call)."""
        return worker_view(self.app)

    def on_revoked(self, fn: Callable[[], None]) -> None:
        async def hook(sender: Any, revoked: Any, **kwargs: Any) -> None:
            fn()

        self.app.on_partitions_revoked.connect(hook)  # type: ignore[arg-type]  # as above

    def producer_for(self, topic: str) -> Callable[[int, bytes], Awaitable[None]]:
        """``send(partition, value)`` to ``topic`` outside any input's transaction (the ticker).

        Not through ``app.topic(...).send``: under exactly-once, Faust routes a send to partition
        p into the transaction of (the topic's group, p), which only the worker owning p has; the
        leader's ticker, sending to every partition, crashed the moment a second worker owned one
        ("No transaction producer found", found by the e2e benchmark's two workers). Faust's own
        plain producer (idempotent, no transaction) writes it instead, visible at once. A tick needs
        no transaction: a lost or repeated one changes nothing, as each tick handles what is due by
        its time and the next comes one interval later.
        """
        async def send(partition: int, value: bytes) -> None:
            await self.app.producer.send(topic, None, value, partition, None, None)

        return send

    def send_soon_to(self, topic: str) -> Callable[[int, bytes], None]:
        """``send(partition, value)`` queued in the producer buffer behind the table writes made so
        far, in the current record's transaction (the tick's firings; the topic must be consumed
        by an agent of this app, as the firings topic is)."""
        channel = raw_topic(self.app, topic)

        def send(partition: int, value: bytes) -> None:
            channel.send_soon(key=None, value=value, partition=partition)

        return send

    async def commit_waiting(self, partitions: set[int], topic: str) -> set[int]:
        """Commit the open transactions of ``partitions`` now (``CommitWatch.waiting_longer_than``)."""
        consumer: Any = self.app.consumer  # a TidingsConsumer (streams/runtime/transport.py)
        return await consumer.commit_transactions_of(partitions, topic)

    def page(self, path: str, *, get: PageHandler | None = None, post: PageHandler | None = None, name: str) -> None:
        """Serve ``path`` on the worker's web port. A handler takes the path's parameters and
        returns ``(status, content type, body)``; it never sees Faust's request or view."""
        from faust.web import Request, Response, View

        def answer(view: View, result: tuple[int, str, str | bytes]) -> Response:
            status, content_type, body = result
            data = body.encode() if isinstance(body, str) else body
            return view.bytes(data, content_type=content_type, status=status)

        class Page(View):
            async def get(self, request: Request, **params: str) -> Response:
                if get is None:
                    return self.text("method not allowed\n", status=405)
                return answer(self, await get(**params))

            async def post(self, request: Request, **params: str) -> Response:
                if post is None:
                    return self.text("method not allowed\n", status=405)
                return answer(self, await post(**params))

        self.app.page(path, name=name)(Page)

    def metrics_page(self, registry: CollectorRegistry, *, before: Callable[[], None] | None = None) -> None:
        """Serve ``registry`` at ``/metrics``; ``before()`` runs first (gauges computed on scrape)."""
        async def page(web: Any, request: Any) -> Any:
            if before is not None:
                before()
            return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

        self.app.page("/metrics")(page)
