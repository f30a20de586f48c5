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

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
import orjson
import rocksdict
from faust.serializers import codecs
from faust.streams import current_event

from streams.errors import InfrastructureFailure
from streams.runtime.transport import ChangelogBatch

if TYPE_CHECKING:
    from streams.settings import Settings

TIMERS_TABLE = "timers"
LEDGER_TABLE = "delivery-ledger"


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's name for a table's changelog topic (``Table.changelog_topic``)."""
    return f"{app_id}-{table}-changelog"
KEY_CODEC = "tidings-key"


class TableKeyCodec(codecs.Codec):
    """Table keys as the standard library's ``json`` writes a string: non-ASCII escaped.

    Faust's own ``json`` codec switches to orjson whenever orjson is installed (Tidings installs
    it for its state values), and orjson writes non-ASCII as UTF-8: the same key would then be
    other bytes than in the local databases and changelogs written before, and a lookup of
    ``Müller/BK-1`` would miss its row. Pinned here, the bytes stay what Faust wrote without
    orjson, whatever is installed.
    """

    def _dumps(self, s: Any) -> bytes:
        return _json_key(s)

    def _loads(self, s: bytes) -> Any:
        return json.loads(s)


codecs.register(KEY_CODEC, TableKeyCodec())


class GuardedRows(MutableMapping[str, Any]):
    """A table as rows whose failed writes are ``InfrastructureFailure``.

    RocksDB reports a full disk or a broken file as a plain ``Exception`` ("IO error: No space
    left on device"); unwrapped, the guard would take it for a bug and dead-letter the record.
    A write that fails is the store's failure, never the record's: the guard holds the record and
    stops the worker (``streams/runtime/guard.py``).
    """

    __slots__ = ("table",)

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: str) -> Any:
        return self.table[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        try:
            self.table[key] = value
        except Exception as e:
            raise _store_failure(self.table, e) from e

    def __delitem__(self, key: str) -> None:
        try:
            del self.table[key]
        except KeyError:
            raise
        except Exception as e:
            raise _store_failure(self.table, e) from e

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


def _store_failure(table: Any, error: Exception) -> InfrastructureFailure:
    return InfrastructureFailure(f"table {getattr(table, 'name', table)!s} refused a write: {type(error).__name__}: {error}"[:300])


def _raw(table: Any) -> Any:
    return table.table if isinstance(table, (GuardedRows, LedgerRows)) else table


@dataclass(frozen=True)
class StateTables:
    states: dict[str, Any]  # table name -> faust.Table
    timers: Any  # faust.Table

    def partition_items(self, table: Any, partition: int) -> Iterator[tuple[str, bytes]]:
        """Every row one partition of a table holds locally, decoded key and raw value.

        Faust has no public per-partition iteration; its RocksDB store keeps one database per
        partition in ``_dbs`` (faust-streaming 0.11+), which this reads. The in-memory store
        (tests with ``memory://``) is not partitioned, so all rows are returned.

        The timer index reads it over many turns of the event loop (``TimerIndex.build``), with
        other agents writing the same database in between. rocksdict's ``items()`` iterator
        (0.3.29) reads the snapshot RocksDB takes when it is created, at the first row: later
        writes are not seen and do not invalidate it, so no re-seek is needed. It holds the
        database open until the generator is closed, even after Faust's store let go of it on a
        revoke (``tests/unit/test_timer_index.py`` checks both).
        """
        store = _raw(table).data
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

    def partition_rows(self, partition: int, source_topic: str | None = None) -> TickRows:
        """The entity tables and the timers table of one partition, as ``PartitionRows``;
        ``source_topic`` is the input whose transaction the writes join (the ticks topic)."""
        changes = ChangelogBatch(partition, source_topic)
        return TickRows(
            states={name: PartitionRows.of(t, partition, changes) for name, t in self.states.items()},
            timers=PartitionRows.of(self.timers, partition, changes),
            app=_raw(self.timers).app,
            changes=changes,
        )


@dataclass
class TickRows:
    """One partition's rows for a tick; ``send_changelog`` queues what was written since the last call."""

    states: dict[str, MutableMapping[str, bytes]]
    timers: MutableMapping[str, bytes]
    app: Any
    changes: ChangelogBatch

    def send_changelog(self) -> int:
        """Put the changelog records written so far into the producer buffer, as one entry.

        Call it in the same step of the event loop as the writes (no ``await`` in between): the
        buffer then holds them in the order the local database took them, relative to every
        other table write (see ``streams/runtime/transport.py``). Returns the number of records.
        """
        queued = len(self.changes)
        if queued:
            self.app.producer.buffer.put(self.changes.take())
        return queued


class PartitionRows(MutableMapping[str, bytes]):
    """One partition of a RocksDB-backed table, read and written without Faust's per-key machinery.

    A tick that fires ten thousand timers reads two rows and writes one per timer. Through the
    ``faust.Table`` mapping each of those costs tens of microseconds before RocksDB is reached
    (the managed-dict layers, a JSON codec lookup per key, the current-event context, sensors),
    which made up about a third of the tick agent's time. Here a read is a ``get`` on the
    partition's database, and a write is the same two effects a table write has, nothing else:
    the row goes into the local database, and its changelog record into ``changes``, which
    ``TickRows.send_changelog`` queues as one batch on the partition's changelog, hence into
    the same exactly-once transaction as the tick.

    Only for the partition of the record being processed, inside its agent, like any table
    write. The key bytes are the table's own encoding, so Faust reads these rows back as usual.
    """

    __slots__ = ("_table", "_db", "_encode", "_topic", "_write", "changes")

    def __init__(self, table: Any, partition: int, changes: ChangelogBatch) -> None:
        store = table.data
        self._table = table
        self._db = store._db_for_partition(partition)
        self._topic = table.changelog_topic.get_topic_name()
        self.changes = changes
        # A RestoredTable's partition is rebuilt from its changelog whenever it is assigned, so
        # RocksDB's write-ahead log protects nothing there; skipping it halves a write.
        self._write = _NO_WAL if isinstance(table, RestoredTable) else None
        self._encode = _key_encoder(table)

    @classmethod
    def of(cls, table: Any, partition: int, changes: ChangelogBatch) -> MutableMapping[str, bytes]:
        """The fast rows where the store is RocksDB; the table itself otherwise (``memory://``)."""
        if getattr(_raw(table).data, "_dbs", None) is None:
            return table
        return cls(_raw(table), partition, changes)

    def __getitem__(self, key: str) -> bytes:
        value = self._db.get(self._encode(key))
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._db.get(self._encode(key))
        return default if value is None else value

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The rows of ``keys`` (None where absent), in one multi-get."""
        encode = self._encode
        return self._db.get([encode(k) for k in keys])

    def __setitem__(self, key: str, value: bytes) -> None:
        raw_key = self._encode(key)
        try:
            self._db.put(raw_key, value, self._write)
        except Exception as e:  # RocksDB's IO errors are plain Exceptions (see GuardedRows)
            raise _store_failure(self._table, e) from e
        self.changes.add(self._topic, raw_key, value)

    def __delitem__(self, key: str) -> None:
        raw_key = self._encode(key)
        if self._db.get(raw_key) is None:
            raise KeyError(key)
        try:
            self._db.delete(raw_key, self._write)
        except Exception as e:
            raise _store_failure(self._table, e) from e
        self.changes.add(self._topic, raw_key, None)

    def __iter__(self) -> Iterator[str]:
        raise TypeError("PartitionRows is for keyed access; use StateTables.partition_items to scan")

    def __len__(self) -> int:
        raise TypeError("PartitionRows is for keyed access; use StateTables.partition_items to scan")


class LedgerRows(MutableMapping[str, Any]):
    """The delivery ledger's rows (message id -> entry dict), without Faust's per-key machinery.

    The sender writes two or three entries a mail (``sending``, then the outcome). Through the
    ``faust.Table`` mapping each write cost about 0.15 ms of CPU: the managed-dict layers,
    sensors, a future message in the producer buffer and a transactional ``send`` of its own
    (py-spy of the sender at 350 mails/s: 15 % of the worker's GIL samples). Here a write has
    the same two effects and nothing else: the entry goes into the partition's local database,
    and its changelog record into the producer buffer as a ``ChangelogBatch``, behind whatever
    the same record wrote before, so it joins the same exactly-once transaction as the record's
    status; the buffer merges neighbouring batches into one aiokafka batch
    (``streams/runtime/transport.py``). Values are JSON as Faust's own codec writes them
    (orjson, which Faust uses when installed), so Faust's restore and ``LedgerExpiry`` read them.

    The partition is the current record's, as for a Faust table write: only inside an agent
    handling a record of a topic co-partitioned with the ledger (the outbound lanes). Faust keeps
    the local rows of a table restored from its local store across restarts (the ledger is not a
    ``RestoredTable``, see ``ledger_table``), so the write keeps RocksDB's write-ahead log.
    """

    __slots__ = ("table", "_app", "_store", "_topic", "_encode")

    def __init__(self, table: Any, app: Any) -> None:
        self.table = table
        self._app = app
        # Faust creates a table's store and changelog topic on first use, after the app is configured.
        self._store: Any = None
        self._topic = ""
        self._encode: Any = None

    def _db(self, partition: int) -> Any:
        if self._store is None:
            self._topic = self.table.changelog_topic.get_topic_name()
            self._store = self.table.data
            self._encode = _key_encoder(self.table)
        return self._store._db_for_partition(partition)

    def _partition(self) -> tuple[int, str]:
        event = current_event()
        if event is None:
            raise RuntimeError("ledger rows are written while handling an outbound record (no current event)")
        return event.message.partition, event.message.topic

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        partition, _ = self._partition()
        db = self._db(partition)
        raw = db.get(self._encode(key))
        return default if raw is None else orjson.loads(raw)

    def __setitem__(self, key: str, value: Any) -> None:
        self._write(key, orjson.dumps(value))

    def __delitem__(self, key: str) -> None:
        if self.get(key) is None:
            raise KeyError(key)
        self._write(key, None)

    def _write(self, key: str, raw: bytes | None) -> None:
        partition, source_topic = self._partition()
        db = self._db(partition)
        raw_key = self._encode(key)
        try:
            if raw is None:
                db.delete(raw_key)
            else:
                db.put(raw_key, raw)
        except Exception as e:  # RocksDB's IO errors are plain Exceptions (see GuardedRows)
            raise _store_failure(self.table, e) from e
        batch = ChangelogBatch(partition, source_topic)
        batch.add(self._topic, raw_key, raw)
        try:
            self._app.producer.buffer.put(batch)
        except Exception as e:
            raise InfrastructureFailure(f"the producer refused a ledger record: {type(e).__name__}") from e

    def __iter__(self) -> Iterator[str]:
        raise TypeError("LedgerRows is for keyed access")

    def __len__(self) -> int:
        raise TypeError("LedgerRows is for keyed access")

    @classmethod
    def of(cls, table: Any, app: Any) -> MutableMapping[str, Any]:
        """The fast rows where the store is RocksDB; the guarded table itself otherwise (``memory://``)."""
        if not str(app.conf.store).startswith("rocksdb"):
            return GuardedRows(table)
        return cls(table, app)


class LedgerExpiry:
    """Deletes delivery-ledger rows older than the retention, a slice of a partition at a time.

    DESIGN invariant 10: the ledger must not grow without end, and its compacted changelog must
    shrink with it, so each expired row is deleted from the local database *and* gets a tombstone
    in the changelog, in the transaction of the tick that swept it (the ticks topic is
    co-partitioned with the ledger, so the tick of partition *p* may write ledger rows of *p*).
    Each call looks at ``rows`` rows from where the last call on that partition stopped, and
    starts over at the end: a partition of a million rows is swept about every half hour at one
    tick a second. A row's age is its entry's ``at`` (``streams/delivery/ledger.py``), against the
    tick's ``now``, so a replay of ticks expires what it would have expired then.
    """

    def __init__(self, table: Any, retention: dt.timedelta, rows: int = 500) -> None:
        self.table = _raw(table)
        self.retention = retention
        self.rows = rows
        self._cursor: dict[int, bytes | None] = {}

    def sweep(self, partition: int, now: dt.datetime, changes: ChangelogBatch) -> int:
        """Expire up to ``rows`` rows' worth of one partition; returns how many were deleted."""
        store = self.table.data
        dbs = getattr(store, "_dbs", None)
        db = dbs.get(partition) if dbs is not None else None
        if db is None:
            return 0
        offset_key = getattr(store, "offset_key", b"__faust\0offset__")
        topic = self.table.changelog_topic.get_topic_name()
        cutoff = now - self.retention
        it = db.iter()
        start = self._cursor.get(partition)
        if start is None:
            it.seek_to_first()
        else:
            it.seek(start)
        expired: list[bytes] = []
        seen = 0
        while it.valid() and seen < self.rows:
            key = it.key()
            seen += 1
            if key != offset_key and _expired(it.value(), cutoff):
                expired.append(key)
            it.next()
        self._cursor[partition] = it.key() if it.valid() else None
        for key in expired:
            try:
                db.delete(key)
            except Exception as e:
                raise _store_failure(self.table, e) from e
            changes.add(topic, key, None)
        return len(expired)


def _expired(raw: bytes | None, cutoff: dt.datetime) -> bool:
    try:
        at = dt.datetime.fromisoformat(json.loads(raw or b"")["at"])
    except (ValueError, KeyError, TypeError):
        return False  # not an entry this code wrote: left alone
    return at.tzinfo is not None and at < cutoff


_JSON_KEYS: dict[str, bool] = {}  # table name -> its keys are plain json.dumps
_NO_WAL = rocksdict.WriteOptions()
_NO_WAL.disable_wal = True  # type: ignore[method-assign, assignment]  # rocksdict's stub has a method; it is a property


def _json_key(key: str) -> bytes:
    return json.dumps(key).encode()


def _key_encoder(table: Any) -> Callable[[str], bytes]:
    """How ``table`` encodes its keys, skipping Faust's codec registry where that is plain JSON.

    The tables' key codec (TableKeyCodec) writes what json.dumps writes; calling json directly
    skips the codec registry, a tenth of a tick's time. Checked once per table on a key that
    needs escaping, so a table with another codec keeps working.
    """
    store = table.data
    fast = _JSON_KEYS.get(table.name)
    if fast is None:
        probe = 'tenant/"ü\\'
        fast = _JSON_KEYS[table.name] = _json_key(probe) == store._encode_key(probe)
    return _json_key if fast else store._encode_key


class CoPartitionedTable(faust.Table):
    """A Faust table whose partition check waits for the changelog's metadata instead of crashing,
    and whose str keys are encoded by ``TableKeyCodec``.

    Before its first write from a source topic, Faust compares the partition counts of that topic
    and of the changelog, from the consumer group's metadata snapshot, where a topic without
    metadata yet (just created, or an error in the last refresh) counts as 0 partitions: the
    write raises ``PartitionsMismatch``, every actor of the agent crashes, and the worker exits
    once the supervisor's restart budget is spent. Counts are checked for real at start-up
    (``streams/topics.py`` refuses a mismatch); here an unknown count is checked on a later write.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.key_type is str:
            # Before the store and the changelog topic, which copy it, are created (lazily).
            self.key_serializer = KEY_CODEC

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
    The price is start-up and rebalance time proportional to the table, at librdkafka's speed
    (``streams/runtime/restore.py``; README "Performance > Timers").
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
        name=LEDGER_TABLE,
        beacon=app.tables.beacon,
        key_type=str,
        partitions=settings.partitions,
        options=rocksdb_options(settings),
    ))


def create_tables(app: faust.App, settings: Settings, names: Iterable[str]) -> StateTables:
    """One table per entity of the packs (``names``: ``storage.bookings`` ...) and the timers table."""
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

    return StateTables(states={name: GuardedRows(table(name)) for name in names}, timers=GuardedRows(table(TIMERS_TABLE)))
