"""Faust agents under the guard, and the writer that puts their outputs into the input's transaction.

A stage registers a handler with ``guarded_agent``: an ``async`` function of one
``RecordContext`` (``ctx.source`` is the input record: topic, partition, offset, key, value,
timestamp, headers). The agent loop, the guard (``streams/runtime/guard.py``) and the writes
(``TransactionalWriter``) are the runtime's; the stage sees none of Faust.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streams.errors import InfrastructureFailure
from streams.runtime.emit import Pending, RecordContext, Source
from streams.runtime.guard import Guard, hold
from streams.runtime.transport import ChangelogBatch


def raw_topic(app: Any, *names: str) -> Any:
    """A Faust topic (or several, read as one) of bytes keys and values: Tidings decodes itself."""
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


class TransactionalWriter:
    """Hands a record's outputs to Faust's producer, in the transaction of the input's partition.

    All outputs of one input go into the producer buffer as one ``ChangelogBatch`` entry (in the
    input's transaction: ``input_transaction``), which the buffer's task appends to aiokafka record
    batches. Awaiting Faust's ``Producer.send`` per record instead (a future, the transaction's
    lock, a send each) cost more per event than rendering its mail. Putting is synchronous, so the
    buffer keeps the order of everything written before (the same record's table writes), and the
    commit waits for the entry like for any table write (``TidingsProducerBuffer.drain``). A send
    the broker refuses is found by the buffer's task, which stops the worker before any commit
    (``streams/runtime/transport.py``): the record is held, as when a write fails here.

    The transactional id is the one Faust itself gives a send to that partition of the input's
    co-partitioned group (``Consumer.send``: ``{app id}-{group}-{partition}``); see
    ``streams/runtime/emit.py`` for why it is taken from the input and not from the output topic.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def write(self, source: Source, records: list[Pending]) -> None:
        batch = ChangelogBatch(source.partition, source.topic, input_transaction=True)
        for r in records:
            batch.add(r.topic, r.key, r.value, r.headers)
        try:
            self.app.producer.buffer.put(batch)
        except Exception as e:
            raise InfrastructureFailure(f"the producer refused {len(records)} records: {type(e).__name__}") from e


def guarded_agent(
    app: Any,
    topics: Sequence[str],
    name: str,
    guard: Guard,
    handler: Callable[[RecordContext], Awaitable[None]],
    *,
    concurrency: int = 1,
    before: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Register an agent over ``topics`` that runs ``handler`` under ``guard`` for every record.

    ``before`` is awaited ahead of each record (the firings agent waits for the tick agent to be
    idle there), outside the guard: it holds no record's outcome.
    """
    channel = raw_topic(app, *topics)

    async def run(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            if before is not None:
                try:
                    await before()
                except BaseException:
                    hold(message)  # stopped while waiting: the record was not handled
                    raise
            await guard(message, handler, message)

    app.agent(channel, name=name, concurrency=concurrency)(run)
