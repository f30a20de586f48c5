"""The Faust tables of entity state and timers, with RocksDB memory set explicitly.

One table per entity of a pack (``<pack>.<entity>``: ``storage.bookings``, ``charging.stations``
...) and one ``timers`` table, all changelog-backed and co-partitioned with the inbound topics
(``streams/topics.py``). Values are bytes written by ``state/values.py``.

Faust's RocksDB defaults reserve a 2 GiB block cache and three 64 MiB write buffers per
partition of every table; here they are ``state_block_cache_mb`` and ``state_write_buffer_mb``
(two buffers), so the worst case is (cache + 2 x buffer) x tables x partitions: with the
defaults, 16 MiB x 8 tables (seven of state and timers, the delivery ledger) x 4 partitions = 512 MiB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust

if TYPE_CHECKING:
    from streams.settings import Settings
    from streams.triggers.rules import Catalog

TIMERS_TABLE = "timers"


@dataclass(frozen=True)
class StateTables:
    states: dict[str, Any]  # table name -> faust.Table
    timers: Any  # faust.Table

    def partition_items(self, table: Any, partition: int) -> Iterator[tuple[str, bytes]]:
        """Every row one partition of a table holds locally, decoded key and raw value.

        Faust has no public per-partition iteration; its RocksDB store keeps one database per
        partition in ``_dbs`` (faust-streaming 0.11+), which this reads. The in-memory store
        (tests with ``memory://``) is not partitioned, so all rows are returned.
        """
        store = table.data
        dbs = getattr(store, "_dbs", None)
        if dbs is None:
            yield from ((k, v) for k, v in store.items())
            return
        db = dbs.get(partition)
        if db is None:
            return
        offset_key = getattr(store, "offset_key", b"__faust\0offset__")
        for raw_key, raw_value in db.items():
            if raw_key == offset_key or raw_value is None:
                continue
            yield store._decode_key(raw_key), raw_value


class CoPartitionedTable(faust.Table):  # type: ignore[misc]
    """A Faust table whose partition check waits for the changelog's metadata instead of crashing.

    Before its first write from a source topic, Faust compares the partition counts of that topic
    and of the changelog, from the consumer group's metadata snapshot, where a topic without
    metadata yet (just created, or an error in the last refresh) counts as 0 partitions: the
    write raises ``PartitionsMismatch``, every actor of the agent crashes, and the worker exits
    once the supervisor's restart budget is spent. Counts are checked for real at start-up
    (``streams/topics.py`` refuses a mismatch); here an unknown count is checked on a later write.
    """

    def _verify_source_topic_partitions(self, source_topic: str) -> None:
        if not self.app.consumer.topic_partitions(self.changelog_topic_name):
            return
        super()._verify_source_topic_partitions(source_topic)


class RestoredTable(CoPartitionedTable):
    """A table whose partitions are restored from the changelog whenever they are assigned.

    Faust writes table values to RocksDB at once, before the transaction that carries their
    changelog records commits. When that transaction aborts (this worker was fenced in a
    rebalance, or crashed), the input is processed again, but the local database already holds
    its effects: a timer already marked fired is not fired again, and the firing, aborted with
    the transaction, is lost. Faust would resume from the local database's persisted offset;
    reporting none makes it read the partition's changelog from the start (committed records
    only), which overwrites every key the changelog knows with its committed value. A key that
    only an aborted transaction created stays, and is written again when its input is.
    The price is start-up and rebalance time proportional to the table (README "Performance").
    """

    def persisted_offset(self, tp: Any) -> int | None:
        return None


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """A fresh dict each call: Faust pops keys from the one it is given."""
    return {
        "block_cache_size": settings.state_block_cache_mb * 1024 * 1024,
        "write_buffer_size": settings.state_write_buffer_mb * 1024 * 1024,
        "max_write_buffer_number": 2,
    }


def ledger_table(app: faust.App, settings: Settings) -> Any:
    """The delivery ledger (``streams/delivery/ledger.py``): message id -> JSON entry.

    It keeps Faust's restore from the local store on purpose: a "sending" or "sent" written
    locally before a crash reflects a request that may have reached SES (``streams/delivery/policy.py``).
    No value_type: values stay plain JSON; value_type=dict does not decode back from RocksDB
    (Faust takes it for a model class).
    """
    return app.tables.add(CoPartitionedTable(
        app,
        name="delivery-ledger",
        beacon=app.tables.beacon,
        key_type=str,
        partitions=settings.partitions,
        options=rocksdb_options(settings),
    ))


def create_tables(app: faust.App, settings: Settings, catalog: Catalog) -> StateTables:
    def table(name: str) -> Any:
        return app.tables.add(RestoredTable(
            app,
            name=name,
            beacon=app.tables.beacon,
            key_type=str,
            value_type=bytes,
            partitions=settings.partitions,
            options=rocksdb_options(settings),
        ))

    return StateTables(states={name: table(name) for name in catalog.tables()}, timers=table(TIMERS_TABLE))
