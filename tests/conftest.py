"""Real components shared by the integration and benchmark tiers, started once per session.

The Kafka broker and moto's server (SES and S3) are started by the project's own scripts
(``deploy/local``), or taken from ``TIDINGS_TEST_BOOTSTRAP`` / ``TIDINGS_TEST_SES_ENDPOINT``. If
they cannot start, the tests that need them fail with the reason; they never skip. Unit tests do
not request these fixtures, so they start nothing. The emulator is reset before every
integration test (``tests/integration/conftest.py``), so a test reads only its own mails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from deploy.local.kafka_broker import EXISTING_BROKER_ENV, BrokerError, LocalBroker
from deploy.local.ses_emulator import EXISTING_EMULATOR_ENV, SesEmulator, prepare


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker | None]:
    """The session's broker, started here; None when the tests run against ``TIDINGS_TEST_BOOTSTRAP``'s.
    The benchmarks read its process's CPU time from it."""
    if os.environ.get(EXISTING_BROKER_ENV):
        yield None
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
    except BrokerError as e:
        pytest.fail(f"the Kafka broker did not start: {e}", pytrace=False)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalBroker | None) -> str:
    return kafka_broker.bootstrap if kafka_broker is not None else os.environ[EXISTING_BROKER_ENV]


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
    prepare(endpoint)
    yield endpoint
    if emulator is not None:
        emulator.stop()

