"""Bulk-load for the timers benchmark: the table rows the ingest path would write, produced to the changelogs.

A worker ingests about 500 events/s on this machine, so a million entities would take over half
an hour to load through it. What ingesting an event leaves behind is two table rows on the
event's partition: the entity's state and its timers row. ``BulkLoader`` computes both with the
worker's own code (the event is Avro-encoded and decoded by the project's codec, then
``TimedEngine.on_event`` projects it and plans its timers, on dict stores) and produces them to
the changelog topics of those tables, on the partition the event's key would have gone to, while
the worker is stopped. At its next start the worker restores them like after any restart
(``RestoredTable`` reads every changelog from the start) and the tick agent rebuilds the timer
index from them. The benchmark's load figure is therefore a restore figure, and the ingest rate
is measured separately on the entities it does publish.

What it does not reproduce: the ingest agent's consumer offsets (these events were never
published) and its metrics (``tidings_entity_updates_total`` counts only ingested events).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from faust.serializers import codecs

from streams import metrics as metrics_module
from streams.codecs.avro import SingleObjectCodec
from streams.codecs.partitioning import default_partition
from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import Catalog
from streams.domain.tenants import Tenant, TenantDirectory
from streams.rendering.render import Renderer
from streams.runtime.tables import KEY_CODEC, TIMERS_TABLE
from streams.settings import REPO_ROOT, Settings
from streams.topics import changelog_names
from streams.triggers.engine import TimedEngine


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog: ``<app id>-<table>-changelog``."""
    return f"{settings.app_id}-{table}-changelog"


def key_partition(key: str, partitions: int) -> int:
    """Where ``EventPublisher`` puts the events of this entity: Kafka's default partitioner."""
    return default_partition(key.encode("utf-8"), partitions)


def table_key(key: str) -> bytes:
    """A table key as Faust stores it (the tables' ``KEY_CODEC``)."""
    return bytes(codecs.dumps(KEY_CODEC, key))


class BulkLoader:
    def __init__(self, settings: Settings, codec: SingleObjectCodec, tenant: Tenant) -> None:
        catalog = Catalog.load()
        self.settings = settings
        self.codec = codec
        self.tenant = tenant
        self.tables = list(catalog.tables())
        self.engine = TimedEngine(
            catalog, TenantDirectory({tenant.tenant_id: tenant}), Renderer(REPO_ROOT / "templates"), metrics_module.create()
        )
        self.producer = Producer({
            "bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 50,  # no compression: the worker's aiokafka reads only what its Python libraries decode
        })
        self.rows = 0

    def load(self, events: Iterable[tuple[str, str, dict[str, Any]]]) -> int:
        """Produce the rows of each ``(event type, event key, record)``, one new entity each; returns the rows."""
        for type_name, key, record in events:
            # Through the Avro codec and back, so the record is what the ingest agent would see.
            decoded = self.codec.decode(self.codec.encode(type_name, record)).record
            states: dict[str, dict[str, bytes]] = {t: {} for t in self.tables}
            timers: dict[str, bytes] = {}
            self.engine.on_event(states, timers, 0, type_name, decoded, self.tenant)
            p = key_partition(key, self.settings.partitions)
            for table, rows in [*states.items(), (TIMERS_TABLE, timers)]:
                for row_key, value in rows.items():
                    self._produce(changelog_topic(self.settings, table), table_key(row_key), value, p)
        self.producer.flush(120)
        remaining = len(self.producer)
        if remaining:
            raise TimeoutError(f"{remaining} changelog records not acknowledged after 120 s")
        return self.rows

    def _produce(self, topic: str, key: bytes, value: bytes, partition: int) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, partition=partition)
                break
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)
        self.rows += 1
        if self.rows % 10_000 == 0:
            self.producer.poll(0)


Event = tuple[str, str, dict[str, Any]]  # (event type, event key, record)


def load_in_processes(
    settings: Settings, tenant: Tenant, event: Callable[[int], Event], numbers: range, processes: int | None = None
) -> int:
    """``BulkLoader.load`` of ``event(n)`` for every n, split over processes; returns the rows.

    Computing the rows is pure Python at about 350 us an entity, six minutes for a million in
    one process; the worker is stopped meanwhile, so every core is free. ``event`` must pickle
    (a module-level function or a ``functools.partial`` of one). Each process opens its own
    producer, in a fresh interpreter (spawned: the benchmark process runs librdkafka threads, which
    a fork would copy mid-flight).
    """
    processes = processes or os.cpu_count() or 1
    step = -(-len(numbers) // processes)
    parts = [numbers[i:i + step] for i in range(0, len(numbers), step)]
    with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(pool.map(_load_part, [(settings, tenant, event, part) for part in parts]))


def _load_part(job: tuple[Settings, Tenant, Callable[[int], Event], range]) -> int:
    settings, tenant, event, numbers = job
    codec = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))
    return BulkLoader(settings, codec, tenant).load(event(n) for n in numbers)


def changelog_partitions(settings: Settings, table: str, timeout: float = 60.0) -> dict[bytes, int]:
    """Key -> partition of every committed record in a table's changelog (to check ``key_partition``)."""
    return {msg.key(): msg.partition() for msg in _committed_records(settings, [changelog_topic(settings, table)], timeout)}


def committed_rows(settings: Settings, timeout: float = 60.0) -> int:
    """How many committed records the worker's changelogs hold: what a worker with no local state restores."""
    return sum(1 for _ in _committed_records(settings, changelog_names(settings, Catalog.load()), timeout))


def _committed_records(settings: Settings, topics: list[str], timeout: float) -> Iterator[Any]:
    """Every committed record of every partition of ``topics``, from the start to the end of each."""
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap, "group.id": "tidings-bench-bulkload",
        "isolation.level": "read_committed", "enable.auto.commit": False, "enable.partition.eof": True,
    })
    try:
        assigned = [TopicPartition(t, p, 0) for t in topics for p in consumer.list_topics(t, timeout=10).topics[t].partitions]
        consumer.assign(assigned)
        pending = {(tp.topic, tp.partition) for tp in assigned}
        while pending:
            msgs = consumer.consume(num_messages=10_000, timeout=timeout)
            if not msgs:
                raise TimeoutError(f"reading {sorted(topics)}: no record nor end within {timeout} s")
            for msg in msgs:
                error = msg.error()
                if error is None:
                    yield msg
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
                else:
                    raise RuntimeError(f"reading {msg.topic()}: {error}")
    finally:
        consumer.close()
