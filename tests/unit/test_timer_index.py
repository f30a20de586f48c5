"""The timer index's build: in slices with the event loop's other work in between, and exact.

A build reads a partition's rows while ingest goes on changing them. Whatever the row iterator
sees of those changes (RocksDB's sees none made after it opened; a re-seeking reader would see
some), the index it installs must be the one the table holds when it ends; a rebalance during a
build must leave the partition not ready. Tables are dicts and the "RocksDB" iterator a snapshot
of one taken at its first row; the last test checks that rocksdict reads that way.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rocksdict

from streams.runtime.tables import StateTables
from streams.triggers.index import TimerIndex

Table = dict[str, float]


def _snapshot_rows(table: Table, log: list[str] | None = None) -> Iterator[tuple[str, float]]:
    """Rows as a RocksDB iterator yields them: the table as it was at the first row read."""
    for key, due in sorted(table.items()):
        if log is not None:
            log.append("row")
        yield key, due


def _live_rows(table: Table) -> Iterator[tuple[str, float]]:
    """Rows read key by key as they are now (a reader that re-seeks per chunk sees later writes)."""
    for key in sorted(table):
        if key in table:
            yield key, table[key]


def _fired(index: TimerIndex, partition: int = 0) -> list[tuple[float, list[str]]]:
    """What ticks would fire from now on, and when: every due time with its entities (it empties the index)."""
    out: list[tuple[float, list[str]]] = []
    while (due := index.earliest(partition)) is not None:
        keys = index.pop_due(partition, due, 10**9)
        assert keys, f"the earliest due time {due} pops nothing"
        out.append((due, sorted(keys)))
    return out


def _expected(table: Table) -> list[tuple[float, list[str]]]:
    reference = TimerIndex()
    reference.rebuild(0, table.items())
    return _fired(reference)


def _change(index: TimerIndex, table: Table, key: str, due: float | None) -> None:
    """What ``TimedEngine.on_event`` does: the row is written, then the index told."""
    if due is None:
        table.pop(key, None)
    else:
        table[key] = due
    index.set(0, key, due)


def _run(build: Coroutine[Any, Any, int | None], meanwhile: Callable[[], Coroutine[Any, Any, None]]) -> int | None:
    async def both() -> int | None:
        task = asyncio.create_task(build)
        await meanwhile()
        return await task

    return asyncio.run(both())


def test_a_build_lets_other_coroutines_run_between_its_slices() -> None:
    index = TimerIndex(slice_seconds=0)  # a slice is then the rows between two looks at the clock
    table = {f"e{n:05d}": 1000.0 + n for n in range(2000)}
    log: list[str] = []
    states: list[tuple[bool, bool]] = []

    async def other() -> None:
        while not index.ready(0):
            log.append("other")
            states.append((index.ready(0), index.building(0)))
            await asyncio.sleep(0)

    async def both() -> int | None:
        task = asyncio.create_task(index.build(0, _snapshot_rows(table, log)))
        await other()
        return await task

    assert asyncio.run(both()) == 2000
    rows = [n for n, what in enumerate(log) if what == "row"]
    between = [what for what in log[rows[0]:rows[-1]] if what == "other"]
    assert len(between) >= 2000 // 256 - 1  # the other coroutine ran between slices, not after the build
    assert all(state == (False, True) for state in states[1:])  # never ready while being built
    assert _fired(index) == _expected(table)


def test_changes_during_a_build_win_over_the_rows_it_reads() -> None:
    index = TimerIndex(slice_seconds=0)
    table = {f"e{n:05d}": 1000.0 + n for n in range(2000)}

    async def ingest() -> None:
        await asyncio.sleep(0)  # the build has read its first slice: e00000..e00255
        assert index.building(0)
        _change(index, table, "e00010", 5.0)  # moved, its row already read
        _change(index, table, "e01500", 7.0)  # moved, its row not read yet
        _change(index, table, "e00020", None)  # its timers gone, row already read
        _change(index, table, "e01600", None)  # its timers gone, row not read yet
        _change(index, table, "new-1", 3.0)  # a new entity
        _change(index, table, "new-2", 4.0)  # new, then gone again
        _change(index, table, "new-2", None)
        _change(index, table, "e01700", None)  # gone, then back
        _change(index, table, "e01700", 9.0)
        _change(index, table, "e00030", 6.0)  # moved twice, the second back to where it was
        _change(index, table, "e00030", 1030.0)

    assert _run(index.build(0, _snapshot_rows(table)), ingest) == 2000 - 2 + 1
    assert _fired(index) == _expected(table)
    assert not index.building(0)


@pytest.mark.parametrize("rows", [_snapshot_rows, _live_rows], ids=["snapshot", "live"])
@pytest.mark.parametrize("seed", range(20))
def test_random_changes_during_a_build_leave_what_the_table_holds(rows: Callable[[Table], Iterator[tuple[str, float]]], seed: int) -> None:
    rnd = random.Random(seed)
    index = TimerIndex(slice_seconds=0)
    table = {f"e{n:04d}": float(rnd.randrange(100)) for n in range(rnd.randrange(0, 3000))}
    keys = [f"e{n:04d}" for n in range(3200)]

    async def ingest() -> None:
        while not index.ready(0):
            for _ in range(rnd.randrange(0, 40)):
                _change(index, table, rnd.choice(keys), None if rnd.random() < 0.3 else float(rnd.randrange(100)))
            await asyncio.sleep(0)

    count = _run(index.build(0, rows(table)), ingest)
    assert count == len(table)
    assert _fired(index) == _expected(table)


def test_a_rebalance_during_a_build_abandons_it_and_the_next_build_starts_over() -> None:
    index = TimerIndex(slice_seconds=0)
    table = {f"e{n:05d}": 1000.0 + n for n in range(2000)}
    closed: list[bool] = []

    def rows() -> Iterator[tuple[str, float]]:
        try:
            yield from _snapshot_rows(table)
        finally:
            closed.append(True)  # a RocksDB iterator is let go with its generator

    async def rebalance() -> None:
        await asyncio.sleep(0)
        index.invalidate()
        # Partitions moved: nothing is recorded for a partition no build is reading.
        index.set(0, "e00001", 1.0)
        assert not index.building(0)

    assert _run(index.build(0, rows()), rebalance) is None
    assert not index.ready(0) and not index.building(0) and closed == [True]
    table["e00001"] = 1.0  # what the table now holds, written by the change above
    assert asyncio.run(index.build(0, _snapshot_rows(table))) == 2000
    assert _fired(index) == _expected(table)


def test_a_second_build_of_a_partition_supersedes_the_first() -> None:
    index = TimerIndex(slice_seconds=0)
    old = {f"e{n:05d}": 1000.0 + n for n in range(2000)}
    new = {"e00001": 5.0}

    async def both() -> tuple[int | None, int | None]:
        first = asyncio.create_task(index.build(0, _snapshot_rows(old)))
        await asyncio.sleep(0)
        rebuilt = index.rebuild(0, new.items())  # while the first is still reading
        return await first, rebuilt

    assert asyncio.run(both()) == (None, 1)
    assert _fired(index) == [(5.0, ["e00001"])]


def test_a_cancelled_build_leaves_nothing_recording_changes() -> None:
    index = TimerIndex(slice_seconds=0)
    table = {f"e{n:05d}": 1000.0 + n for n in range(2000)}

    async def cancel() -> None:
        task = asyncio.create_task(index.build(0, _snapshot_rows(table)))
        await asyncio.sleep(0)
        assert index.building(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel())
    assert not index.building(0) and not index.ready(0)


def test_other_partitions_stay_ready_while_one_is_built() -> None:
    index = TimerIndex(slice_seconds=0)
    index.rebuild(1, [("a", 10.0)])
    table = {f"e{n:05d}": 1000.0 + n for n in range(1000)}

    async def tick_elsewhere() -> None:
        await asyncio.sleep(0)
        assert index.building(0) and index.ready(1)
        index.set(1, "b", 5.0)
        assert index.pop_due(1, 10.0, 10) == ["b", "a"]

    assert _run(index.build(0, _snapshot_rows(table)), tick_elsewhere) == 1000
    assert index.pending() == 1000


def test_partition_items_reads_rocksdb_as_of_its_first_row_across_writes_and_a_revoke(tmp_path: Path) -> None:
    """What the build relies on in rocksdict (a real database in ``tmp_path``, as test_restore.py):
    the rows iterator reads a snapshot taken at its first row, so writes made while it is
    suspended are not seen (the overlay carries them) and do not invalidate it, and it keeps the
    partition's database open when Faust's store lets go of it (a revoke) until it is closed."""
    db = rocksdict.Rdict(str(tmp_path / "timers-0"), options=rocksdict.Options(raw_mode=True))
    offset_key = b"__faust\0offset__"
    for n in range(10):
        db.put(json.dumps(f"e{n}").encode(), b"%d" % n)
    db.put(offset_key, b"7")
    store = SimpleNamespace(_dbs={0: db}, offset_key=offset_key, _decode_key=json.loads)
    rows = StateTables(states={}, timers=None).partition_items(SimpleNamespace(data=store), 0)
    db.put(json.dumps("before").encode(), b"x")  # before the first row: seen
    first = next(rows)
    db.put(json.dumps("e9x").encode(), b"x")  # after it, ahead of the iterator: not seen
    db.delete(json.dumps("e5").encode())  # not seen either: the row is still read
    store._dbs.clear()  # Faust's revoke_partitions pops the database without closing it
    del db
    assert [first, *rows] == [("before", b"x"), *[(f"e{n}", b"%d" % n) for n in range(10)]]
