"""The agents tier: every stage's handler on an in-memory runtime, in milliseconds.

The runtime here is the real guard (``streams/runtime/guard.py``) and the real per-record context
(``streams/runtime/emit.py``) with a recording writer in place of Faust's producer, dict rows in
place of RocksDB tables, the ``RecordingSender`` in place of SES and a fixed clock. What a
handler emits is what the worker would write in the input's transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from streams import metrics as metrics_module
from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.delivery.outbox import DELIVERY_STATUS, OUTBOUND, OUTBOUND_PRIORITY
from streams.domain.rules import Catalog
from streams.domain.tenants import TenantDirectory
from streams.ingest.pipeline import IngestPipeline
from streams.rendering.render import Renderer
from streams.runtime.emit import Outputs, RecordingWriter
from streams.runtime.guard import Guard, Outcome
from streams.settings import REPO_ROOT

NOW = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone.utc)
TOPICS = {OUTBOUND: "t.outbound", OUTBOUND_PRIORITY: "t.outbound-priority", DELIVERY_STATUS: "t.delivery-status"}
DEAD_LETTER = "t.dead-letter"


@dataclass
class Record:
    """An input record as Faust's ``Message`` presents it, with its reference count."""

    topic: str
    value: bytes | None
    partition: int = 0
    offset: int = 7
    key: bytes | None = b"k"
    timestamp: float = NOW.timestamp()
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    refcount: int = 0

    def incref(self) -> None:
        self.refcount += 1


class FixedClock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.at = now

    def now(self) -> dt.datetime:
        return self.at


class Runtime:
    """One stage's guard over a recording writer; ``held`` lists what stopped the worker."""

    def __init__(self, stage: str, max_record_bytes: int = 1_000_000) -> None:
        self.writer = RecordingWriter()
        self.held: list[BaseException] = []
        self.outputs = Outputs(
            topics=TOPICS, dead_letter_topic=DEAD_LETTER, max_record_bytes=max_record_bytes, writer=self.writer,
            reports=frozenset({DELIVERY_STATUS}),
        )
        self.guard = Guard(stage, self.outputs, on_hold=lambda error, where: self.held.append(error))

    def run(self, handler: Callable[..., Any], record: Record) -> Outcome:
        return asyncio.run(self.guard(record, handler, record))

    def dead_letters(self) -> list[dict[str, str]]:
        return [
            {k: v.decode() for k, v in p.headers}
            for p in self.writer.on(DEAD_LETTER)
        ]


class Faults:
    """Raises ``error`` at the ``target``-th call made through any wrapped collaborator.

    A run with no target counts the calls (the steps of a handler); a test then runs once per step
    with the fault there.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.target: int | None = None
        self.error: BaseException | None = None

    def wrap(self, obj: Any, name: str) -> Any:
        return _Faulty(obj, self, name)

    def step(self, what: str) -> None:
        self.calls.append(what)
        if self.target is not None and len(self.calls) == self.target and self.error is not None:
            raise self.error


class _Faulty:
    def __init__(self, obj: Any, faults: Faults, name: str) -> None:
        self._obj, self._faults, self._name = obj, faults, name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._obj, attr)
        if not callable(value) or inspect.isclass(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            self._faults.step(f"{self._name}.{attr}")
            return value(*args, **kwargs)

        return call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._faults.step(self._name)
        return self._obj(*args, **kwargs)

    # Mapping access (ledger rows, state rows) goes through the same steps.
    def __getitem__(self, key: Any) -> Any:
        self._faults.step(f"{self._name}[]")
        return self._obj[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._faults.step(f"{self._name}[]=")
        self._obj[key] = value

    def __delitem__(self, key: Any) -> None:
        self._faults.step(f"del {self._name}[]")
        del self._obj[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._obj

    def __iter__(self) -> Iterator[Any]:
        return iter(self._obj)

    def __len__(self) -> int:
        return len(self._obj)


class MemoryTables:
    """``StateTables`` on dicts: one dict per table (the tier has one partition)."""

    def __init__(self, catalog: Catalog) -> None:
        self.states: dict[str, dict[str, bytes]] = {name: {} for name in catalog.tables()}
        self.timers: dict[str, bytes] = {}

    def partition_items(self, table: Any, partition: int) -> Iterator[tuple[str, bytes]]:
        return iter(list(table.items()))

    def partition_rows(self, partition: int, source_topic: str | None = None) -> Any:
        return SimpleNamespace(states=self.states, timers=self.timers, send_changelog=lambda: 0)


@pytest.fixture(scope="session")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="session")
def tenants() -> TenantDirectory:
    return TenantDirectory.load(REPO_ROOT / "deploy" / "tenants")


@pytest.fixture(scope="session")
def pipeline(codec: SingleObjectCodec, catalog: Catalog, tenants: TenantDirectory) -> IngestPipeline:
    return IngestPipeline(codec=codec, catalog=catalog, tenants=tenants, renderer=Renderer(REPO_ROOT / "templates"))


@pytest.fixture
def metrics() -> metrics_module.Metrics:
    return metrics_module.create()
