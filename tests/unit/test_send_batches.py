"""Runs of records sent as record batches of their own (``transport._send_batches``): every such
batch is closed when it is handed over, so it never lingers and never holds up the partition's
next one (aiokafka's ``MessageAccumulator.add_batch`` waits for the batch before it)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from streams.runtime.transport import BATCH_OF_ITS_OWN, _send_batches


class ProducerTwin:
    def __init__(self, batch_bytes: int) -> None:
        self.batch_bytes = batch_bytes
        self.batches: list[tuple[bool, int]] = []  # (closed when handed over, records)
        self.sent: list[Any] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, 0, is_transactional=1)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> None:
        self.batches.append((builder._closed, builder.record_count()))

    async def send(self, topic: str, *, value: bytes | None, key: bytes | None, partition: int, headers: Any) -> None:
        self.sent.append(value)


def records(n: int, size: int = 100) -> list[tuple[bytes | None, bytes | None, None]]:
    return [(str(i).encode(), bytes(size), None) for i in range(n)]


def test_a_run_that_fits_one_batch_goes_out_closed() -> None:
    producer = ProducerTwin(786_432)
    asyncio.run(_send_batches(producer, "t", 0, records(BATCH_OF_ITS_OWN + 10)))
    assert producer.batches == [(True, BATCH_OF_ITS_OWN + 10)] and producer.sent == []


def test_a_run_over_several_batches_goes_out_closed_batch_by_batch_with_every_record() -> None:
    producer = ProducerTwin(16_384)
    asyncio.run(_send_batches(producer, "t", 0, records(1_000)))
    assert len(producer.batches) > 2
    assert all(closed for closed, _ in producer.batches)
    assert sum(n for _, n in producer.batches) == 1_000


def test_a_short_run_joins_the_partitions_open_batch() -> None:
    producer = ProducerTwin(786_432)
    asyncio.run(_send_batches(producer, "t", 0, records(BATCH_OF_ITS_OWN - 1)))
    assert producer.batches == [] and len(producer.sent) == BATCH_OF_ITS_OWN - 1
