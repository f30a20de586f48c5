"""At a revocation, records that finish while the worker waits for them are committed before Faust
forgets the partitions, even when a periodic commit is under way (``TidingsConsumer.
on_partitions_revoked``).

Found in the sender benchmark (three workers at 1,000 mails/s): Faust's final commit at a
revocation returned without committing because a periodic commit was still running, the offsets
acked after that commit's snapshot stayed uncommitted, their outcomes stayed in transactions the
partitions' next owner aborted, and it sent 18 mails again. Faust's real consumer, offline; only
the base commit (the broker's side) is replaced, by one that takes a while and records what it got.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from faust.types.tuples import Message

from streams.runtime.transport import TidingsConsumer

TOPIC = "outbound"
TP0 = TP(TOPIC, 0)


def _message(offset: int) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, {}, b"k", b"v", None)


def test_a_record_finished_during_a_revocation_is_committed_though_a_periodic_commit_was_running(
    offline_consumer: Callable[[str], TidingsConsumer], monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = offline_consumer("revocation-commit")
    consumer.app.topics._acking_topics.add(TOPIC)
    consumer.assignment = lambda: {TP0}  # type: ignore[method-assign]  # the offline consumer has no thread to ask
    commits: list[tuple[dict[TP, int], bool]] = []

    async def slow_commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        commits.append((dict(offsets), start_new_transaction))
        await asyncio.sleep(0.3)  # a commit under load: the broker takes its time
        return True

    monkeypatch.setattr(aiokafka_driver.Consumer, "_commit_offsets", slow_commit)
    earlier, in_flight = _message(9), _message(10)

    async def scenario() -> None:
        for m in (earlier, in_flight):
            consumer.track_message(m)
        consumer.ack(earlier)
        periodic = asyncio.ensure_future(consumer.commit())  # the commit timer, up to offset 9
        await asyncio.sleep(0.05)

        async def finish() -> None:  # the send in flight gets its answer during the revocation
            await asyncio.sleep(0.1)
            consumer.ack(in_flight)

        finishing = asyncio.ensure_future(finish())
        await consumer.on_partitions_revoked({TP0})
        await periodic
        await finishing

    consumer.loop.run_until_complete(scenario())
    assert commits[0] == ({TP0: 10}, True)  # the periodic commit
    # offset 10 finished while it ran; it is committed, and the transaction ended, at the revocation
    assert ({TP0: 11}, False) in commits
