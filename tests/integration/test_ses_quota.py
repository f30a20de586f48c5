"""``GetAccount`` from both SES clients against the SES stand-in (``deploy/sesstub``), which checks
their signatures as SES does, into the quota gauges (``streams/delivery/quota.py``).

moto's server has no ``GetAccount``; the stand-in answers it with the account SES would describe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from deploy.sesstub import SesStub
from streams import metrics
from streams.delivery.quota import quota_poller
from streams.delivery.sender import SesSender
from streams.delivery.sesv2 import LeanSesSender
from streams.settings import Settings


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SesStub]:
    with SesStub(tmp_path_factory.mktemp("sesstub")) as s:
        yield s


@pytest.mark.parametrize("kind", ["lean", "boto3"])
def test_both_clients_poll_the_quota_into_the_gauges(stub: SesStub, kind: str) -> None:
    settings = Settings(ses_endpoint_url=stub.endpoint, aws_access_key_id=SecretStr("test"),
                        aws_secret_access_key=SecretStr("test"))
    sender: Any = LeanSesSender(settings) if kind == "lean" else SesSender(settings)
    m = metrics.create(CollectorRegistry())
    poll = quota_poller(sender, m)
    assert poll is not None

    async def once() -> None:
        try:
            await poll()
        finally:
            if kind == "lean":
                await sender.close()

    asyncio.run(once())
    if kind == "boto3":
        sender._client.close()
    value = m.registry.get_sample_value
    assert value("tidings_ses_account_polls_total", {"outcome": "ok"}) == 1
    assert value("tidings_ses_max_send_rate", {}) == 14.0  # the stand-in's default -max-send-rate
    assert value("tidings_ses_max_24h_send", {}) == 100_000_000.0
    assert value("tidings_ses_sending_enabled", {}) == 1.0
    assert value("tidings_ses_enforcement_status", {"status": "HEALTHY"}) == 1.0
