"""The benchmark's workload: N BookingCreated events, encoded once, published as the same bytes to
both pipelines.

Events come from ``deploy.local.samples.booking_created`` for both example tenants in several
customer languages (so both brands and both template languages render). Recipient addresses carry
the run id, so the mails of this run can be told apart in a shared SES emulator. Encoding happens
before the clock starts: the timed part is producing, not Avro-encoding, the input.

``records`` is how many outbound records the events must produce, computed with the same trigger
rules the worker uses (one ``booking.created`` mail per event with today's packs).
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.tenants import TenantDirectory
from streams.producer import EventPublisher
from streams.settings import REPO_ROOT

# (tenant, customer locale), cycled over the events.
MIX = (
    ("lagerhaus-nord", "de"), ("lagerhaus-nord", "en-GB"), ("boxit-london", "en"),
    ("lagerhaus-nord", None), ("boxit-london", "de"), ("lagerhaus-nord", "de-AT"),
)


@dataclass(frozen=True)
class BenchParams:
    events: int  # N, per pipeline
    partitions: int  # of every topic
    broker: str  # "local" (started by the fixture) or "external" (TIDINGS_TEST_BOOTSTRAP)


@dataclass(frozen=True)
class Event:
    key: str
    value: bytes
    event_id: str


@dataclass(frozen=True)
class Workload:
    events: list[Event]
    records: int  # outbound records the events must produce
    warmup: Event  # one extra event, sent before the clock starts
    warmup_records: int

    @property
    def event_ids(self) -> set[str]:
        return {e.event_id for e in self.events}


def build_workload(count: int, run: str, publisher: EventPublisher, first: int = 0) -> Workload:
    """``count`` events numbered from ``first`` (distinct entities and event ids per phase), and a warm-up event."""
    catalog = Catalog.load()
    tenants = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants")

    def make(n: int) -> tuple[Event, int]:
        tenant_id, locale = MIX[n % len(MIX)]
        record = booking_created(tenant_id, n, email=f"c{n}.{run}@example.org", locale=locale)
        event = Event(record["booking_id"], publisher.encode(BOOKING_CREATED, record), record["envelope"]["event_id"])
        tenant = tenants.get(tenant_id)
        assert tenant is not None, f"sample tenant {tenant_id} is not in deploy/tenants"
        return event, len(event_firings(BOOKING_CREATED, record, catalog, tenant))

    made = [make(n) for n in range(first, first + count)]
    warmup, warmup_records = make(first + count)
    records = sum(mails for _, mails in made)
    assert records > 0 and warmup_records > 0, "no trigger fires for the sample events: nothing to measure"
    return Workload([e for e, _ in made], records, warmup, warmup_records)
