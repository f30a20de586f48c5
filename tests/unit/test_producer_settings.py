"""The producers Faust builds for a worker (streams/runtime/transport.py, TidingsProducer) compress
their record batches as ``TIDINGS_PRODUCER_COMPRESSION`` says, gather them as
``TIDINGS_PRODUCER_BATCH_BYTES`` and ``TIDINGS_PRODUCER_LINGER_MS`` say, and retry after
``TIDINGS_PRODUCER_RETRY_BACKOFF_MS``: the transactional ones above all, whose commits the broker
answers CONCURRENT_TRANSACTIONS while it still ends the transaction before (aiokafka's 100 ms
default then delays the whole commit). No broker: the clients are built, never started."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from streams.runtime.app import new_app
from streams.settings import Settings

T = TypeVar("T")


def _read_producers(settings: Settings, read: Callable[[Any], T]) -> dict[str, T]:
    """``read`` applied to each kind of producer Faust builds for a worker with ``settings``."""
    async def main() -> dict[str, T]:
        producer = new_app(settings).producer
        built = {"transactional": producer._new_producer(transactional_id="tidings-0-0"), "plain": producer._new_producer()}
        try:
            return {kind: read(p) for kind, p in built.items()}
        finally:
            for p in built.values():
                await p.stop()

    return asyncio.run(main())


def _backoffs(settings: Settings) -> dict[str, tuple[float, float]]:
    # The sender's backoff (produce and transaction requests) and the client's (metadata, coordinators).
    return _read_producers(settings, lambda p: (p._sender._retry_backoff, p.client._retry_backoff))


def test_every_producer_retries_after_the_configured_backoff() -> None:
    backoffs = _backoffs(Settings(producer_retry_backoff_ms=35))
    assert backoffs == {"transactional": (0.035, 0.035), "plain": (0.035, 0.035)}


def test_the_default_backoff_is_shorter_than_aiokafkas() -> None:
    backoffs = _backoffs(Settings())
    assert backoffs["transactional"] == (0.02, 0.02)  # aiokafka alone: 0.1


def _batch_bytes(settings: Settings, value: bytes) -> dict[str, int]:
    """Bytes of a one-record batch as each kind of producer Faust builds would send it."""
    def one_record(p: Any) -> int:
        batch = p.create_batch()
        batch.append(key=b"key", value=value, timestamp=None)
        return len(batch._build())

    return _read_producers(settings, one_record)


def test_record_batches_are_compressed_when_a_compression_is_set() -> None:
    # A rendered mail is mostly markup that repeats itself.
    mail = b"<tr><td style='padding:0 24px;font-family:Arial'>Your booking is confirmed</td></tr>" * 60
    plain = _batch_bytes(Settings(producer_compression="none"), mail)
    assert min(plain.values()) > len(mail)  # records as they are
    assert max(_batch_bytes(Settings(), mail).values()) < len(mail) / 4  # the default: lz4
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        compressed = _batch_bytes(Settings(producer_compression=codec), mail)
        assert max(compressed.values()) < len(mail) / 4, codec


def test_an_unknown_compression_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_PRODUCER_COMPRESSION", "brotli")
    with pytest.raises(ValidationError, match="producer_compression"):
        Settings()


def _batch_sizes(settings: Settings) -> dict[str, int]:
    return _read_producers(settings, lambda p: p._message_accumulator._batch_size)


def test_every_producer_gathers_batches_of_the_configured_size() -> None:
    assert _batch_sizes(Settings()) == {"transactional": 786_432, "plain": 786_432}  # Faust alone: 16 KiB
    assert _batch_sizes(Settings(producer_batch_bytes=65_536)) == {"transactional": 65_536, "plain": 65_536}


def test_a_batch_larger_than_the_broker_takes_is_refused_naming_both_settings() -> None:
    with pytest.raises(ValidationError, match="TIDINGS_PRODUCER_BATCH_BYTES .* over TIDINGS_MAX_RECORD_BYTES"):
        Settings(producer_batch_bytes=2_000_000)
    assert Settings(producer_batch_bytes=2_000_000, max_record_bytes=4_000_000).producer_batch_bytes == 2_000_000


def _lingers(settings: Settings) -> dict[str, float]:
    return _read_producers(settings, lambda p: p._message_accumulator._linger_time)


def test_under_exactly_once_batches_linger_until_the_commit_that_sends_them() -> None:
    # A record is visible only at the commit, which sends what lingers: 10 ms past the interval.
    assert _lingers(Settings()) == {"transactional": pytest.approx(0.05), "plain": pytest.approx(0.05)}
    assert _lingers(Settings(commit_interval_seconds=0.07))["transactional"] == pytest.approx(0.08)
    # The plain producer's records (the leader's ticks) are visible at once: a long interval is not waited for.
    assert _lingers(Settings(commit_interval_seconds=2.0))["plain"] == pytest.approx(0.1)


def test_under_at_least_once_records_are_visible_when_written_so_they_linger_5_ms() -> None:
    assert _lingers(Settings(processing_guarantee="at_least_once"))["plain"] == pytest.approx(0.005)


def test_a_linger_that_is_set_is_taken_as_it_is() -> None:
    assert _lingers(Settings(producer_linger_ms=12)) == {"transactional": pytest.approx(0.012), "plain": pytest.approx(0.012)}
    assert _lingers(Settings(producer_linger_ms=0, processing_guarantee="at_least_once"))["plain"] == 0
