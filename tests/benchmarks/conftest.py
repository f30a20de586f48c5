"""Fixtures of the benchmark tier: its knobs.

The broker and the emulator come from ``tests/conftest.py`` (shared with the integration tier).

Knobs (environment): ``TIDINGS_BENCH_EVENTS`` (events per pipeline, default 2000) and
``TIDINGS_BENCH_PARTITIONS`` (partitions of every topic, default 4, as the integration tier).
"""

from __future__ import annotations

import os

import pytest

from deploy.local.kafka_broker import EXISTING_BROKER_ENV
from tests.benchmarks.workload import BenchParams


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r} is not a number") from None
    if value < 1:
        raise pytest.UsageError(f"{name} must be at least 1, not {value}")
    return value


@pytest.fixture(scope="session")
def bench_params() -> BenchParams:
    return BenchParams(
        events=_positive_int("TIDINGS_BENCH_EVENTS", 2000),
        partitions=_positive_int("TIDINGS_BENCH_PARTITIONS", 4),
        broker="external" if os.environ.get(EXISTING_BROKER_ENV) else "local",
    )
