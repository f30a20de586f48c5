"""Real components shared by the integration and benchmark tiers, started once per session.

The Kafka broker and moto's server (SES and S3) are started by the project's own scripts
(``deploy/local``), or taken from ``TIDINGS_TEST_BOOTSTRAP`` / ``TIDINGS_TEST_SES_ENDPOINT``. If
they cannot start, the tests that need them fail with the reason; they never skip. Unit tests do
not request these fixtures, so they start nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from deploy.local.kafka_broker import EXISTING_BROKER_ENV, BrokerError, LocalBroker
from deploy.local.ses_emulator import EXISTING_EMULATOR_ENV, SesEmulator, put_sample_attachments, verify_domains
from streams.domain.tenants import TenantDirectory
from streams.settings import REPO_ROOT


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
    """moto's server with the example tenants' sender domains verified and the sample PDFs in S3."""
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
