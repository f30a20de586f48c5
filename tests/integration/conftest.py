"""Fixtures of the integration tier: a deployment per test on the real broker and emulator.

The broker and the emulator themselves come from ``tests/conftest.py``. Every test gets its own
topic prefix, app id (consumer group) and recipient addresses, so tests never see each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.ses_emulator import prepare
from tests.integration.harness import Deployment, worker_env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def deployment(kafka_bootstrap: str, ses_endpoint: str, tmp_path: Path) -> Iterator[Deployment]:
    # Each test starts with an empty emulator: reading what was sent lists every mail moto holds,
    # and after a few thousand mails of earlier tests every poll cost seconds of CPU, which
    # slowed the worker under test and the latency measured on it.
    prepare(ses_endpoint, fresh=True)
    run = uuid.uuid4().hex[:8]
    dep = Deployment(
        run=run,
        bootstrap=kafka_bootstrap,
        ses_endpoint=ses_endpoint,
        workdir=tmp_path,
        env=worker_env(run, kafka_bootstrap, ses_endpoint),
    )
    dep.create_topics()
    dep.publish_tenants()
    try:
        yield dep
    finally:
        dep.close()
