"""The pure core of the ingest agent: one inbound record in, its mails and rejections out.

No Kafka here: the agent hands in bytes and metadata, and writes what comes back. An input that
cannot be used at all yields one rejection for the whole record; a mail that cannot be rendered
yields a rejection for that mail while the event's other mails go on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from streams.codecs.avro import Decoded, SingleObjectCodec
from streams.codecs.wire import TopicDecoders
from streams.domain.customers import InactiveCustomers
from streams.domain.evaluate import Firing, event_firings, field_at
from streams.domain.rules import Catalog, EventRule
from streams.domain.status import firing_fields
from streams.domain.tenants import Tenant, TenantDirectory
from streams.errors import InvalidEvent, RejectedInput, UnknownEventType, UnknownTenant
from streams.ingest.redact import redact
from streams.outcomes import Rejection
from streams.rendering.render import Rendered, Renderer, Source

OUTBOUND_SCHEMA = "tidings.outbound.RenderedEmail"


@dataclass
class IngestResult:
    event_type: str = "undecodable"
    mails: list[Rendered] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    # Set when the event was accepted (decoded, known type and tenant): what the timed triggers'
    # state tables are updated from.
    record: dict[str, Any] | None = None
    tenant: Tenant | None = None
    decoded: Decoded | None = None
    # Mails of the event that are not sent because the event is older than their trigger's
    # max_age (DESIGN invariant 10); the event still updates the entity state.
    stale: list[Firing] = field(default_factory=list)
    # Mails decided but not rendered: their recipient is an inactive customer (status fields).
    skipped: list[dict[str, Any]] = field(default_factory=list)


class IngestPipeline:
    def __init__(
        self,
        codec: SingleObjectCodec,
        catalog: Catalog,
        tenants: TenantDirectory,
        renderer: Renderer,
        decoders: TopicDecoders | None = None,
        inactive: InactiveCustomers | None = None,
    ):
        self.codec = codec
        self.decoders = decoders if decoders is not None else TopicDecoders(codec)
        self.catalog = catalog
        # In a worker, the live directory the tenant feed keeps equal to the tenants topic: each
        # event is judged against the tenants as they are when it is processed.
        self.tenants = tenants
        self.renderer = renderer
        self.inactive = inactive if inactive is not None else InactiveCustomers()

    def process(self, value: bytes | None, *, topic: str, timestamp: dt.datetime, now: dt.datetime) -> IngestResult:
        result = IngestResult()
        decoded = None
        try:
            decoded = self.decoders.decode(topic, value)
            result.event_type = decoded.type_name
            record = decoded.record
            if not self.catalog.handles(decoded.type_name):
                raise UnknownEventType(f"no pack handles {decoded.type_name}")
            tenant_id = str(field_at(record, "envelope.tenant_id"))
            tenant = self.tenants.get(tenant_id)
            if tenant is None:
                raise UnknownTenant(f"tenant {tenant_id[:64]!r} is not configured")
            firings = event_firings(decoded.type_name, record, self.catalog, tenant)
        except RejectedInput as e:
            result.rejections.append(self._rejection("ingest", e, decoded))
            return result
        age = now - field_at(record, "envelope.occurred_at")
        result.stale = [f for f in firings if age > _age_limit(f)]
        if result.stale:
            firings = [f for f in firings if f not in result.stale]
        result.record, result.tenant, result.decoded = record, tenant, decoded
        source = Source(topic=topic, event_id=str(record["envelope"]["event_id"]), timestamp=timestamp)
        firings, skipped = self.inactive.partition(tenant.tenant_id, firings)
        result.skipped = [firing_fields(f, tenant.tenant_id, source.event_id) for f in skipped]
        for firing in firings:
            try:
                result.mails.append(self.renderer.render(firing, tenant, record, source, now))
            except RejectedInput as e:
                result.rejections.append(self._rejection("render", e, decoded, firing.message_id))
        return result

    def state_rejection(self, error: RejectedInput, result: IngestResult) -> Rejection:
        """A rejection of an accepted event by the state stage (its state does not fit the rules)."""
        return self._rejection("state", error, result.decoded)

    def mail_rejection(self, error: RejectedInput, result: IngestResult, message_id: str) -> Rejection:
        """A rejection of one mail of an accepted event (it cannot be encoded or sent as it is)."""
        return self._rejection("render", error, result.decoded, message_id)

    def _rejection(
        self, stage: str, error: RejectedInput, decoded: Decoded | None, message_id: str | None = None
    ) -> Rejection:
        if decoded is None or not decoded.writer.secrets:
            return Rejection(stage, error.reason, error.detail, message_id)
        secrets = decoded.writer.secrets
        return Rejection(
            stage, error.reason, error.detail, message_id,
            replacement=self.codec.encode(decoded.type_name, redact(decoded.record, secrets)),
            redacted=secrets,
        )

    def encode(self, mail: dict[str, Any]) -> bytes:
        try:
            return self.codec.encode(OUTBOUND_SCHEMA, mail)
        except (ValueError, TypeError) as e:
            raise InvalidEvent(f"rendered mail does not fit {OUTBOUND_SCHEMA}: {e}") from e


def _age_limit(firing: Firing) -> dt.timedelta:
    """The age past which an event no longer fires this mail; ``event_firings`` only fires event triggers."""
    rule = firing.trigger.rule
    if not isinstance(rule, EventRule):
        raise TypeError(f"{firing.trigger.key} is not an event trigger")
    return rule.age_limit
