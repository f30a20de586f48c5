"""Fixtures of the benchmark tier: the real Kafka broker and the SES emulator, once per session.

Same approach as ``tests/integration/conftest.py``: the broker and moto's SES server are started by
the project's own scripts (``deploy/local``), or taken from ``TIDINGS_TEST_BOOTSTRAP`` /
``TIDINGS_TEST_SES_ENDPOINT``. If they cannot start, the benchmark fails with the reason.

Knobs (environment): ``TIDINGS_BENCH_EVENTS`` (events per pipeline, default 2000) and
``TIDINGS_BENCH_PARTITIONS`` (partitions of every topic, default 4, as the integration tier).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
import pytest

from deploy.local.kafka_broker import EXISTING_BROKER_ENV, BrokerError, LocalBroker
from deploy.local.ses_emulator import EXISTING_EMULATOR_ENV, SesEmulator, verify_domains
from streams.settings import REPO_ROOT
from streams.tenants.model import TenantDirectory
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


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get(EXISTING_BROKER_ENV)
    if existing:
        yield existing
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
    except BrokerError as e:
        pytest.fail(f"the Kafka broker did not start: {e}", pytrace=False)
    yield broker.bootstrap
    broker.stop()


@pytest.fixture(scope="session")
def ses_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get(EXISTING_EMULATOR_ENV)
    emulator = None
    if existing:
        endpoint = existing
    else:
        emulator = SesEmulator(tmp_path_factory.mktemp("ses"))
        try:
            emulator.start()
        except (RuntimeError, TimeoutError) as e:
            pytest.fail(f"the SES emulator did not start: {e}", pytrace=False)
        endpoint = emulator.endpoint
    tenants = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants")
    verify_domains(endpoint, (t.sender.from_address.rpartition("@")[2] for t in tenants))
    yield endpoint
    if emulator is not None:
        emulator.stop()
