"""Shared builders for the unit tier: the repository's real schemas, packs, templates and tenants."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import faust
import mode
import pytest

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import Catalog
from streams.domain.tenants import TenantDirectory
from streams.ingest.pipeline import IngestPipeline
from streams.rendering.render import Renderer
from streams.runtime.transport import TidingsConsumer, TidingsTransport
from streams.settings import REPO_ROOT

NOW = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="session")
def schemas() -> SchemaRepository:
    return SchemaRepository.load(REPO_ROOT / "schemas")


@pytest.fixture(scope="session")
def codec(schemas: SchemaRepository) -> SingleObjectCodec:
    return SingleObjectCodec(schemas)


@pytest.fixture(scope="session")
def tenants() -> TenantDirectory:
    return TenantDirectory.load(REPO_ROOT / "deploy" / "tenants")


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    return Renderer(REPO_ROOT / "templates")


@pytest.fixture(scope="session")
def pipeline(codec: SingleObjectCodec, tenants: TenantDirectory, renderer: Renderer) -> IngestPipeline:
    return IngestPipeline(codec=codec, catalog=Catalog.load(), tenants=tenants, renderer=renderer)


class _OfflineConsumer(TidingsConsumer):
    def _new_consumer_thread(self) -> Any:
        # The real one owns a thread, its loop and a connection; offsets, gaps and timers need none.
        return mode.Service(loop=self.loop, beacon=self.beacon)


async def _nothing(*args: Any) -> None:
    return None


@pytest.fixture
def offline_consumer() -> Iterator[Callable[[str], TidingsConsumer]]:
    """Builds Tidings' consumer on a Faust app (named by the argument) that never connects, each on
    an event loop of its own, closed after the test."""
    loops: list[asyncio.AbstractEventLoop] = []

    def make(app_id: str) -> TidingsConsumer:
        loop = asyncio.new_event_loop()
        loops.append(loop)
        app = faust.App(app_id, broker="kafka://127.0.0.1:1", loop=loop)
        return _OfflineConsumer(TidingsTransport("kafka://127.0.0.1:1", app), callback=_nothing,
                                on_partitions_revoked=_nothing, on_partitions_assigned=_nothing, loop=loop)

    try:
        yield make
    finally:
        for loop in loops:
            loop.close()
