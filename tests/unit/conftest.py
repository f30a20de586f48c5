"""Shared builders for the unit tier: the repository's real schemas, packs, templates and tenants."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import Catalog
from streams.domain.tenants import TenantDirectory
from streams.ingest.pipeline import IngestPipeline
from streams.rendering.render import Renderer
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
