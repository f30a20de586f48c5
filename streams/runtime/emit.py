"""Outputs that commit with their input: declared once, written on the input's partition.

Every topic a stage writes in its input's transaction is declared here by name (``Outputs``):
the outbound lanes, the delivery-status topic, the dead-letter topic, the firings topic. A stage
never picks a partition or a transaction; it gets a ``RecordContext`` for the record it handles
and calls ``emit(output, key, value)`` or ``dead_letter(rejection)``. The context

- refuses an output that was not declared (a programming error, caught by the agents tier);
- knows a record the broker would refuse before anything is written: ``emit`` raises
  ``RecordTooLarge`` (``message_too_large``, with the size), so the stage dead-letters that mail
  instead of crashing in the producer (which used to acknowledge the input with nothing written);
- holds what the handler emitted until the handler has finished (``flush``): a handler that
  fails half-way leaves no half of its outputs behind, only its dead letter;
- writes each record inside the exactly-once transaction of the *input's* partition number.

That last point is why no "audit" agent is needed any more. Faust's ``Topic.send`` chooses the
transaction from the *output* topic's co-partitioned group, which it only knows for topics some
agent subscribes to; for any other topic the send silently leaves the transaction. ``Outputs``
takes the transaction from the input's topic instead, which Faust always knows (it is assigned),
and hands the record to Faust's producer with that transactional id, as ``Topic.send`` would. All
Tidings topics have the same partition count, so the input's group is the output's group.

Without transactions (``at_least_once``), records go through the plain producer; the input is
acknowledged only after they were handed over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.errors import RecordTooLarge
from streams.outcomes import Rejection, dead_letter_headers

log = logging.getLogger(__name__)

# What a record costs beyond its key, value and headers in a batch of one (record and batch
# headers, varints): aiokafka's estimate for a v2 batch is 61 bytes plus about 20 a record.
RECORD_OVERHEAD_BYTES = 128

Headers = list[tuple[str, bytes]]


class Source(Protocol):
    """The input record, as Faust's ``Message`` has it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    headers: Any


@dataclass(frozen=True)
class Pending:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


class Writer(Protocol):
    """Where ``RecordContext.flush`` hands records: the worker's transactional producer, or a
    recording twin in the agents tier."""

    async def write(self, source: Source, records: list[Pending]) -> None: ...


def record_size(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]] = ()) -> int:
    return (
        (len(key) if key else 0) + (len(value) if value else 0)
        + sum(len(k) + len(v) for k, v in headers) + RECORD_OVERHEAD_BYTES
    )


@dataclass
class Outputs:
    """The outputs of one worker: logical name -> topic, the size limit, where records go."""

    topics: Mapping[str, str]
    dead_letter_topic: str
    max_record_bytes: int
    writer: Writer
    on_dead_letter: Callable[[Rejection], None] = lambda rejection: None  # metrics
    # Outputs that only report on the record (delivery statuses): a record whose other outputs
    # are dead letters counts as dead-lettered, whatever it reported.
    reports: frozenset[str] = frozenset()

    def context(self, source: Source, stage: str) -> RecordContext:
        return RecordContext(self, source, stage)


@dataclass
class RecordContext:
    """One input record's view of its outputs (see the module docstring)."""

    outputs: Outputs
    source: Source
    stage: str
    pending: list[Pending] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    _after_commit: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def partition(self) -> int:
        return self.source.partition

    def emit(self, output: str, key: bytes | None, value: bytes | None, headers: Headers | None = None) -> None:
        """Queue one record for ``output`` (a declared name) on the input's partition.

        Raises ``RecordTooLarge`` if the broker would refuse it; nothing is queued then.
        """
        topic = self.outputs.topics.get(output)
        if topic is None:
            raise KeyError(f"{output!r} is not a declared output (streams/runtime/emit.py)")
        headers = headers or []
        size = record_size(key, value, headers)
        if size > self.outputs.max_record_bytes:
            raise RecordTooLarge(
                f"the {output} record would be {size} bytes; the broker accepts {self.outputs.max_record_bytes}"
            )
        self.pending.append(Pending(topic, key, value, headers))

    def dead_letter(self, rejection: Rejection, value: bytes | None = None) -> None:
        """Queue the input (or ``value`` in its place: a redacted copy, a timer reference) for the
        dead-letter topic, with the reason in its headers."""
        src = self.source
        if value is None:
            value = rejection.replacement if rejection.replacement is not None else src.value
        headers = dead_letter_headers(rejection, topic=src.topic, partition=src.partition, offset=src.offset)
        self.pending.append(Pending(self.outputs.dead_letter_topic, src.key, value, headers))
        self.rejections.append(rejection)

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once this record's outputs were handed to the producer."""
        self._after_commit.append(callback)

    def discard(self) -> None:
        """Forget what was emitted (the handler failed): only a dead letter will be written."""
        self.pending.clear()
        self.rejections.clear()
        self._after_commit.clear()

    async def flush(self) -> None:
        if self.pending:
            await self.outputs.writer.write(self.source, self.pending)
        for rejection in self.rejections:
            log.warning(
                "dead-lettered %s[%s]@%s: %s (%s)",
                self.source.topic, self.source.partition, self.source.offset, rejection.reason, rejection.detail,
            )
            self.outputs.on_dead_letter(rejection)
        for callback in self._after_commit:
            callback()
        self.pending = []
        self.rejections = []
        self._after_commit = []


class RecordingWriter:
    """The in-memory twin of the worker's writer: every flushed record, in order (agents tier)."""

    def __init__(self) -> None:
        self.records: list[tuple[Source, Pending]] = []
        self.fail_with: BaseException | None = None  # the next write raises this (a refused write)

    async def write(self, source: Source, records: list[Pending]) -> None:
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        self.records.extend((source, r) for r in records)

    def on(self, topic: str) -> list[Pending]:
        return [r for _, r in self.records if r.topic == topic]
