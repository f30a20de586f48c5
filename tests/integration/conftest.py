"""Fixtures of the integration tier: a real Kafka broker, moto's SES server, real workers.

The broker and the emulator are started once per session by the project's own scripts
(``deploy/local``), or taken from ``TIDINGS_TEST_BOOTSTRAP`` / ``TIDINGS_TEST_SES_ENDPOINT``.
If they cannot start, the tests fail with the reason; they never skip. Every test gets its own
topic prefix, app id (consumer group) and recipient addresses, so tests never see each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.kafka_broker import EXISTING_BROKER_ENV, BrokerError, LocalBroker
from deploy.local.ses_emulator import EXISTING_EMULATOR_ENV, SesEmulator, put_sample_attachments, verify_domains
from streams.settings import REPO_ROOT
from streams.tenants.model import TenantDirectory
from tests.integration.harness import Deployment


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


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
    put_sample_attachments(endpoint)
    yield endpoint
    if emulator is not None:
        emulator.stop()


@pytest.fixture
def deployment(kafka_bootstrap: str, ses_endpoint: str, tmp_path: Path) -> Iterator[Deployment]:
    run = uuid.uuid4().hex[:8]
    dep = Deployment(
        run=run,
        bootstrap=kafka_bootstrap,
        ses_endpoint=ses_endpoint,
        workdir=tmp_path,
        env={
            "TIDINGS_APP_ID": f"it-{run}",
            "TIDINGS_TOPIC_PREFIX": f"it-{run}.",
            "TIDINGS_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "TIDINGS_SES_ENDPOINT_URL": ses_endpoint,
            "TIDINGS_S3_ENDPOINT_URL": ses_endpoint,
            "TIDINGS_AWS_ACCESS_KEY_ID": "test",
            "TIDINGS_AWS_SECRET_ACCESS_KEY": "test",
            "TIDINGS_PARTITIONS": "4",
        },
    )
    dep.create_topics()
    try:
        yield dep
    finally:
        dep.close()
