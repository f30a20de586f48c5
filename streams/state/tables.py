"""The Faust tables of entity state and timers, with RocksDB memory set explicitly.

One table per entity of a pack (``<pack>.<entity>``: ``storage.bookings``, ``charging.stations``
...) and one ``timers`` table, all changelog-backed and co-partitioned with the inbound topics
(``streams/topics.py``). Values are bytes written by ``state/values.py``.

Faust's RocksDB defaults reserve a 2 GiB block cache and three 64 MiB write buffers per
partition of every table; here they are ``state_block_cache_mb`` and ``state_write_buffer_mb``
(two buffers), so the worst case is (cache + 2 x buffer) x tables x partitions: with the
defaults, 16 MiB x 7 tables x 4 partitions = 448 MiB.
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


class RestoredTable(faust.Table):  # type: ignore[misc]
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


def create_tables(app: faust.App, settings: Settings, catalog: Catalog) -> StateTables:
    options = {
        "block_cache_size": settings.state_block_cache_mb * 1024 * 1024,
        "write_buffer_size": settings.state_write_buffer_mb * 1024 * 1024,
        "max_write_buffer_number": 2,
    }

    def table(name: str) -> Any:
        return app.tables.add(RestoredTable(
            app,
            name=name,
            beacon=app.tables.beacon,
            key_type=str,
            value_type=bytes,
            partitions=settings.partitions,
            options=dict(options),  # Faust pops keys from it; one dict per table
        ))

    return StateTables(states={name: table(name) for name in catalog.tables()}, timers=table(TIMERS_TABLE))
