"""The producer buffer's own rules (streams/runtime/transport.py, TidingsProducerBuffer), with a
recording stand-in for the producer: runs of ChangelogBatch entries are sent together, ``drain``
waits for what was put before it and no more, and a failed send of either kind of entry stops
the worker instead of letting Faust's graceful crash commit the inputs' offsets."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from streams.runtime.transport import ChangelogBatch, TidingsProducerBuffer


class _Producer:
    def __init__(self, fail: bool = False) -> None:
        self.sends: list[int] = []  # records per send_changelog_batch call
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_changelog_batch(self, *batches: ChangelogBatch) -> None:
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("broker gone")
        self.sends.append(sum(map(len, batches)))


class _Buffer(TidingsProducerBuffer):
    failures: list[tuple[str, str]]

    def on_failure(self, error: BaseException, where: str) -> None:  # type: ignore[override]
        self.failures.append((type(error).__name__, where))


def _buffer(producer: _Producer) -> _Buffer:
    buffer = _Buffer()
    buffer.failures = []
    buffer._started.set()  # "running" without its task: the tests call _send_pending themselves
    buffer.app = SimpleNamespace(producer=producer, conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    return buffer


def _batch(records: int) -> ChangelogBatch:
    batch = ChangelogBatch(0)
    for n in range(records):
        batch.add("t", b"k%d" % n, b"v")
    return batch


def test_queued_batches_go_out_in_one_send_and_drain_returns() -> None:
    async def main() -> _Producer:
        producer = _Producer()
        buffer = _buffer(producer)
        for size in (1, 2, 3):
            buffer.put(_batch(size))
        await buffer._send_pending(buffer.pending.get_nowait())
        assert producer.sends == [6]  # the two behind the first were taken with it
        assert buffer.pending.empty()
        await asyncio.wait_for(buffer.drain(), 1)  # all three counted as sent
        return producer

    asyncio.run(main())


def test_drain_waits_for_what_was_put_before_it_not_after() -> None:
    async def main() -> None:
        producer = _Producer()
        buffer = _buffer(producer)
        buffer.max_merged = 1  # one entry a send, so the second is still queued
        buffer.put(_batch(1))
        producer.gate.clear()
        sending = asyncio.ensure_future(buffer._send_pending(buffer.pending.get_nowait()))
        drained = asyncio.ensure_future(buffer.drain())
        await asyncio.sleep(0.05)
        buffer.put(_batch(1))  # after the drain began: not waited for
        assert not drained.done()  # the first is still being sent
        producer.gate.set()
        await sending
        await asyncio.wait_for(drained, 1)
        assert not buffer.pending.empty()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["changelog batch", "faust table write"])
def test_a_failed_send_stops_the_worker(kind: str) -> None:
    async def main() -> list[tuple[str, str]]:
        buffer = _buffer(_Producer(fail=True))
        entry: Any
        if kind == "changelog batch":
            entry = _batch(2)
        else:
            async def publish(fut: Any, wait: bool) -> None:
                raise ConnectionError("broker gone")
            entry = SimpleNamespace(message=SimpleNamespace(channel=SimpleNamespace(publish_message=publish)))
        buffer.put(entry)
        with pytest.raises(ConnectionError):
            await buffer._send_pending(buffer.pending.get_nowait())
        assert buffer._sent == 1  # counted, so no drain waits for it forever
        return buffer.failures

    failures = asyncio.run(main())
    assert len(failures) == 1 and failures[0][0] == "ConnectionError"
    assert "producer buffer" in failures[0][1]
