"""The producers Faust builds for a worker (streams/runtime/transport.py, TidingsProducer) retry after
``TIDINGS_PRODUCER_RETRY_BACKOFF_MS``: the transactional ones above all, whose commits the broker
answers CONCURRENT_TRANSACTIONS while it still ends the transaction before (aiokafka's 100 ms
default then delays the whole commit). No broker: the clients are built, never started."""

from __future__ import annotations

import asyncio

from streams.runtime.app import new_app
from streams.settings import Settings


def _backoffs(settings: Settings) -> dict[str, tuple[float, float]]:
    async def main() -> dict[str, tuple[float, float]]:
        producer = new_app(settings).producer
        built = {"transactional": producer._new_producer(transactional_id="tidings-0-0"), "plain": producer._new_producer()}
        try:
            # The sender's backoff (produce and transaction requests) and the client's (metadata, coordinators).
            return {kind: (p._sender._retry_backoff, p.client._retry_backoff) for kind, p in built.items()}
        finally:
            for p in built.values():
                await p.stop()

    return asyncio.run(main())


def test_every_producer_retries_after_the_configured_backoff() -> None:
    backoffs = _backoffs(Settings(producer_retry_backoff_ms=35))
    assert backoffs == {"transactional": (0.035, 0.035), "plain": (0.035, 0.035)}


def test_the_default_backoff_is_shorter_than_aiokafkas() -> None:
    backoffs = _backoffs(Settings())
    assert backoffs["transactional"] == (0.02, 0.02)  # aiokafka alone: 0.1
