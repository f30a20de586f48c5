"""What the worker's consumer and tables say about themselves, read without a call to Kafka.

``worker_view(app)`` is the one place that reads Faust's bookkeeping for operators
(``streams/health.py`` judges readiness from it, ``streams/observe.py`` turns it into metrics):

- the assignment, and whether a rebalance is under way (``app.rebalancing``);
- whether the tables are restored: Faust's recovery sets ``completed`` once every active changelog
  partition is read up to its end, and ``in_recovery`` while it reads;
- restore progress per changelog partition: the offset read so far (``active_offsets``) and the
  end it reads up to (``active_highwaters``), as Faust's own ``active_remaining`` computes them;
- consumer lag per assigned input partition: the high watermark the consumer last saw in a fetch
  answer (aiokafka's ``highwater``, or ``last_stable_offset`` under exactly-once, as Faust's own
  ``Consumer.highwater`` chooses) minus the offset Faust last committed (``_committed_offset``,
  the next offset to read, as Kafka counts it). Both are cached by the client: reading them costs
  nothing, so a scrape or a probe never waits on the broker.

Written against faust-streaming 0.15.3 (``contract.py`` fingerprints what it reads). Every read is
defensive: before the consumer exists, or in the middle of a rebalance, a value is missing rather
than an exception raised, because a probe must answer whatever the worker is doing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class RestoreState:
    """One changelog partition being restored: ``offset`` read so far, ``end`` to reach (both inclusive)."""

    table: str
    partition: int
    offset: int
    end: int

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.offset)


@dataclass(frozen=True)
class WorkerView:
    consumer_started: bool = False
    rebalancing: bool = False
    assignment: frozenset[TopicPartition] = frozenset()
    tables_restored: bool = False  # Faust's recovery finished for the current assignment
    restoring: tuple[RestoreState, ...] = ()
    lag: dict[TopicPartition, int] = field(default_factory=dict)  # records, per assigned input partition


def worker_view(app: Any) -> WorkerView:
    """The view of a running (or starting, or stopping) Faust app; never raises for a missing part."""
    consumer = getattr(app, "_consumer", None)  # app.consumer would create one
    if consumer is None:
        return WorkerView()
    try:
        assignment = frozenset((tp.topic, tp.partition) for tp in consumer.assignment())
    except Exception:  # noqa: BLE001 - the aiokafka consumer is not started yet (or stopped)
        return WorkerView()
    recovery = getattr(getattr(app, "tables", None), "recovery", None)
    restored = bool(recovery is not None and recovery.completed.is_set() and not recovery.in_recovery)
    tables = getattr(app, "tables", None)
    changelogs = set(tables.changelog_topics) if tables is not None else set()
    return WorkerView(
        consumer_started=True,
        rebalancing=bool(getattr(app, "rebalancing", False)),
        assignment=assignment,
        tables_restored=restored,
        restoring=_restoring(recovery) if recovery is not None and not restored else (),
        lag=_lag(consumer, {tp for tp in consumer.assignment() if tp.topic not in changelogs}),
    )


def _restoring(recovery: Any) -> tuple[RestoreState, ...]:
    out = []
    for tp, end in list(recovery.active_highwaters.items()):
        offset = recovery.active_offsets.get(tp)
        table = recovery.tp_to_table.get(tp)
        if end is None or offset is None or table is None:
            continue
        out.append(RestoreState(str(table.name), tp.partition, int(offset), int(end)))
    return tuple(sorted(out, key=lambda r: (r.table, r.partition)))


def _lag(consumer: Any, tps: set[Any]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    committed = getattr(consumer, "_committed_offset", {})
    for tp in tps:
        try:
            end = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - the partition was revoked between the two reads
            continue
        done = committed.get(tp)
        if end is None:
            continue  # nothing fetched yet: unknown, not zero
        if done is None:
            if end == 0:  # an empty partition: nothing to consume
                out[(tp.topic, tp.partition)] = 0
            continue  # records, none committed by this group yet: unknown without asking the broker
        out[(tp.topic, tp.partition)] = max(0, int(end) - int(done))
    return out
