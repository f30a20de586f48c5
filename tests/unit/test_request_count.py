"""Every request a worker's Kafka client sends is reported by API (``transport.count_requests``,
the ``tidings_kafka_requests_total`` counter). No broker: a client twin answers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.transaction import EndTxnRequest

from streams.runtime.app import new_app
from streams.runtime.transport import count_requests
from streams.settings import Settings


class ClientTwin:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any]] = []

    async def send(self, node_id: Any, request: Any, *, group: Any = None) -> str:
        self.sent.append((node_id, request))
        return f"answer to {type(request).__name__}"


class App:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_kafka_request(self, client: str, api: str) -> None:
        self.seen.append((client, api))


def test_each_request_is_reported_by_its_api_and_still_sent_with_its_answer() -> None:
    client, app = ClientTwin(), App()
    count_requests(client, "producer", app)
    end = EndTxnRequest(transactional_id="t", producer_id=1, producer_epoch=0, transaction_result=True)
    fetch = FetchRequest(max_wait_time=10, min_bytes=1, max_bytes=1024, isolation_level=1, topics=[])

    async def main() -> list[str]:
        return [await client.send(0, end), await client.send(1, fetch, group="coordination")]

    assert asyncio.run(main()) == ["answer to EndTxnRequest", "answer to FetchRequest"]
    assert app.seen == [("producer", "EndTxn"), ("producer", "Fetch")]
    assert [node for node, _ in client.sent] == [0, 1]


def test_the_hook_is_looked_up_at_each_request() -> None:
    # The composition root sets the app's hook after Faust may have built the clients.
    client, app = ClientTwin(), App()
    count_requests(client, "consumer", app)
    later: list[tuple[str, str]] = []
    app.on_kafka_request = lambda kind, api: later.append((kind, api))  # type: ignore[method-assign]
    fetch = FetchRequest(max_wait_time=10, min_bytes=1, max_bytes=1024, isolation_level=1, topics=[])
    asyncio.run(client.send(0, fetch))
    assert later == [("consumer", "Fetch")] and app.seen == []


def test_every_producer_faust_builds_for_the_worker_is_counted() -> None:
    async def main() -> list[str]:
        app = new_app(Settings())
        producer = app.producer
        built = [producer._new_producer(transactional_id="tidings-0-0"), producer._new_producer()]
        try:
            return [p.client.send.__qualname__ for p in built]
        finally:
            for p in built:
                await p.stop()

    assert asyncio.run(main()) == ["count_requests.<locals>.counted"] * 2
