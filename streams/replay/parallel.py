"""A dry run in several processes, each over its own partitions: ``tidings-replay --processes N``.

The replay's state is per partition (an entity's records all land on one partition number, of
whichever inbound topic, and its timers with it), so processes that own disjoint sets of partition
numbers never need each other's state: each one is a complete dry run of its partitions.

The parent prepares everything the worker reads at start (the runtime, tenants, suppressions,
customer statuses; no Kafka client open any more) and then forks: the children inherit it instead
of reading the compacted topics again. Each child reads its own spans with its own read-only
consumer (``kafka.py``: assigned, never subscribed, nothing committed) or, from a record file, the
lines of its partitions; it writes its JSON lines into one scratch file per input partition and
hands back its summary. The parent then writes the files in ``(topic, partition)`` order, the
lines of a partition in the order its records were read (offset order from Kafka): the output
does not depend on N or on which process was faster. Progress is the sum of the children's counters, shown by the parent.

What differs from one process: the ledger (duplicates) is per process, as the sender's is per
partition, so a mail whose id appears on two partitions is ``fired`` twice where one process
would call the second a ``duplicate``. Only dry runs are split: a simulation's clock and a shadow
run's comparison need every partition in one place.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from streams.replay.records import ReplayRecord, read_file

PROGRESS_SECONDS = 0.5


class WorkerFailed(Exception):
    """A replay process ended without its result (its traceback is on standard error)."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; a container's cpuset counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def assign(sizes: Mapping[int, int], processes: int) -> list[list[int]]:
    """Partition numbers for each process: the largest first to the least loaded (ties: the lower
    index), so the split is the same every time for the same sizes. Empty processes are dropped."""
    loads = [0] * processes
    owned: list[list[int]] = [[] for _ in range(processes)]
    for partition in sorted(sizes, key=lambda p: (-sizes[p], p)):
        k = min(range(processes), key=lambda i: (loads[i], i))
        loads[k] += sizes[partition]
        owned[k].append(partition)
    return [sorted(ps) for ps in owned if ps]


@dataclass
class Shard:
    """What one process reads: its partition numbers and, from Kafka, its spans."""

    index: int
    partitions: frozenset[int]
    spans: list[Any] = field(default_factory=list)  # kafka.Span


@dataclass
class ShardResult:
    summary: Any  # report.Summary
    records: int
    entities: int
    files: dict[tuple[str, int], str]  # (topic, partition) -> its JSON lines file


def shards_of(partitions: Sequence[list[int]], spans: Sequence[Any] = ()) -> list[Shard]:
    return [Shard(k, frozenset(ps), [s for s in spans if s.partition in ps]) for k, ps in enumerate(partitions)]


def _records(shard: Shard, file: Path | None, topics: set[str] | None, bootstrap: str) -> Iterator[ReplayRecord]:
    if file is not None:
        return (r for r in read_file(file) if r.partition in shard.partitions and (topics is None or r.topic in topics))
    from streams.replay import kafka

    consumer = kafka.read_only_consumer(bootstrap)

    def read() -> Iterator[ReplayRecord]:
        try:
            yield from kafka.read_spans(consumer, shard.spans)
        finally:
            consumer.close()

    return read()


class _Files:
    """One JSON lines file per input partition; a line goes to the partition of the record being fed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: dict[tuple[str, int], str] = {}
        self.open: dict[tuple[str, int], IO[bytes]] = {}
        self.current: IO[bytes] | None = None

    def follow(self, records: Iterator[ReplayRecord]) -> Iterator[ReplayRecord]:
        for r in records:
            key = (r.topic, r.partition)
            f = self.open.get(key)
            if f is None:
                name = f"{len(self.names):05d}.jsonl"  # topic names from a file are not trusted as file names
                self.names[key] = name
                f = self.open[key] = (self.folder / name).open("wb")
            self.current = f
            yield r

    def write(self, data: bytes) -> None:
        assert self.current is not None, "a line is emitted only while a record is fed"
        self.current.write(data)

    def close(self) -> None:
        for f in self.open.values():
            f.close()


def _child(shard: Shard, folder: Path, make_replay: Callable[[Callable[[Any], None]], Any], keep: Callable[[Any], bool],
           file: Path | None, topics: set[str] | None, bootstrap: str, counters: Any) -> None:
    from streams.replay.report import Summary

    try:
        folder.mkdir(parents=True, exist_ok=True)
        summary, files = Summary(), _Files(folder)

        def emit(line: Any) -> None:
            if keep(line):
                summary.add(line)
                files.write(line.json_bytes() + b"\n")

        replay = make_replay(emit)
        done = 0

        def counted() -> None:
            nonlocal done
            done += 1
            if done % 256 == 0:  # a shared counter write per record would cost more than the progress is worth
                counters[shard.index] = done

        asyncio.run(replay.feed_all(files.follow(_records(shard, file, topics, bootstrap)), on_record=counted))
        counters[shard.index] = done
        files.close()
        result = ShardResult(summary, replay.records, replay.tables.entities(), dict(files.names))
        (folder / "result.pickle").write_bytes(pickle.dumps(result))
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


def run_shards(
    shards: Sequence[Shard],
    scratch: Path,
    make_replay: Callable[[Callable[[Any], None]], Any],
    keep: Callable[[Any], bool],
    *,
    file: Path | None,
    topics: set[str] | None,
    bootstrap: str,
    progress: Callable[[int], None] = lambda done: None,
) -> list[ShardResult]:
    """Fork one process per shard, wait for them all (reporting progress), return their results."""
    ctx = multiprocessing.get_context("fork")
    counters = ctx.Array("q", len(shards), lock=False)  # one slot per child: a single writer each
    procs = []
    for shard in shards:
        folder = scratch / f"shard-{shard.index}"
        p = ctx.Process(target=_child, args=(shard, folder, make_replay, keep, file, topics, bootstrap, counters),
                        name=f"tidings-replay-{shard.index}", daemon=True)
        p.start()
        procs.append(p)
    try:
        running = {p.sentinel: p for p in procs}
        while running:
            for sentinel in multiprocessing.connection.wait(list(running), timeout=PROGRESS_SECONDS):
                p = running.pop(sentinel)  # type: ignore[arg-type]  # a sentinel is an int
                p.join()
                if p.exitcode != 0:
                    raise WorkerFailed(f"replay process {p.name} exited with {p.exitcode}")
            progress(sum(counters))
    finally:
        for p in procs:
            if p.exitcode is None:
                p.terminate()
                p.join()
    return [pickle.loads((scratch / f"shard-{s.index}" / "result.pickle").read_bytes()) for s in shards]


def merge(results: Sequence[ShardResult], scratch: Path, shards: Sequence[Shard], out: IO[bytes]) -> Any:
    """Every shard's lines into ``out`` in (topic, partition) order; the summaries added up."""
    from streams.replay.report import Summary

    summary = Summary()
    files: list[tuple[tuple[str, int], Path]] = []
    for shard, result in zip(shards, results, strict=True):
        summary.by_trigger.update(result.summary.by_trigger)
        summary.by_day.update(result.summary.by_day)
        summary.reasons.update(result.summary.reasons)
        files += [(key, scratch / f"shard-{shard.index}" / name) for key, name in result.files.items()]
    for _, path in sorted(files):
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                out.write(chunk)
    return summary
