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


def raw_topic(app: Any, *names: str) -> Any:
    """A Faust topic (or several, read as one) of bytes keys and values: Tidings decodes itself."""
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


class TransactionalWriter:
    """Hands a record's outputs to Faust's producer, in the transaction of the input's partition.

    The transactional id is the one Faust itself gives a send to that partition of the input's
    co-partitioned group (``Consumer.send``: ``{app id}-{group}-{partition}``); see
    ``streams/runtime/emit.py`` for why it is taken from the input and not from the output topic.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def write(self, source: Source, records: list[Pending]) -> None:
        app = self.app
        tid = None
        if app.in_transaction:
            tid = f"{app.conf.id}-{app.assignor.group_for_topic(source.topic)}-{source.partition}"
        producer = app.producer
        for r in records:
            try:
                await producer.send(r.topic, r.key, r.value, source.partition, None, r.headers, transactional_id=tid)
            except Exception as e:
                raise InfrastructureFailure(f"the producer refused a record for {r.topic}: {type(e).__name__}") from e


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
