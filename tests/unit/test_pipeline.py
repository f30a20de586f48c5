from __future__ import annotations

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.codecs.avro import SingleObjectCodec
from streams.ingest.pipeline import IngestPipeline
from tests.unit.conftest import NOW


def _process(pipeline: IngestPipeline, value: bytes | None):  # type: ignore[no-untyped-def]
    return pipeline.process(value, topic="tidings.bookings", timestamp=NOW, now=NOW)


def test_a_booking_becomes_one_mail_that_fits_the_outbound_schema(pipeline: IngestPipeline, codec: SingleObjectCodec) -> None:
    result = _process(pipeline, codec.encode(BOOKING_CREATED, booking_created("boxit-london", 3)))
    assert result.rejections == []
    (mail,) = result.mails
    decoded = codec.decode(pipeline.encode(mail.record))
    assert decoded.type_name == "tidings.outbound.RenderedEmail"
    assert decoded.record["trigger"] == "booking.created"
    assert decoded.record["entity_id"] == "BK-000003"


def test_the_same_event_processed_twice_has_the_same_message_id(pipeline: IngestPipeline, codec: SingleObjectCodec) -> None:
    data = codec.encode(BOOKING_CREATED, booking_created("boxit-london", 3))
    first, second = _process(pipeline, data), _process(pipeline, data)
    assert first.mails[0].record["message_id"] == second.mails[0].record["message_id"]


def test_unknown_tenant_is_rejected_without_its_name_unbounded(pipeline: IngestPipeline, codec: SingleObjectCodec) -> None:
    result = _process(pipeline, codec.encode(BOOKING_CREATED, booking_created("x" * 500, 3)))
    (rejection,) = result.rejections
    assert (rejection.stage, rejection.reason) == ("ingest", "unknown_tenant")
    assert len(rejection.detail) < 120


def test_a_trigger_the_tenant_has_not_activated_sends_nothing(codec: SingleObjectCodec, renderer, tenants) -> None:  # type: ignore[no-untyped-def]
    from streams.domain.rules import Catalog
    from streams.domain.tenants import Tenant, TenantDirectory, TriggerSetting

    base = tenants.get("boxit-london")
    off = base.model_copy(update={"triggers": {"storage/booking.created": TriggerSetting(enabled=False)}})
    silent = Tenant.model_validate(off.model_dump())
    pipeline = IngestPipeline(codec, Catalog.load(), TenantDirectory({"boxit-london": silent}), renderer)
    result = _process(pipeline, codec.encode(BOOKING_CREATED, booking_created("boxit-london", 3)))
    assert result.mails == [] and result.rejections == []


def test_garbage_is_one_rejection_not_an_exception(pipeline: IngestPipeline) -> None:
    result = _process(pipeline, b"\xc3\x01garbage")
    assert [(r.stage, r.reason) for r in result.rejections] == [("ingest", "not_avro")]


def test_a_dead_lettered_event_loses_its_secrets_and_keeps_the_rest(pipeline: IngestPipeline, codec: SingleObjectCodec) -> None:
    from streams.domain.samples import sample_event

    reset = "tidings.storage.PasswordResetRequested"
    assert "reset_url" in codec.schemas.latest(reset).secrets
    event = sample_event(pipeline.catalog.samples, reset, "no-such-tenant", now=NOW)
    original = codec.encode(reset, event)
    (rejection,) = _process(pipeline, original).rejections
    assert rejection.reason == "unknown_tenant"
    assert rejection.redacted == codec.schemas.latest(reset).secrets
    assert rejection.replacement is not None
    assert event["reset_url"].encode() not in rejection.replacement
    kept = codec.decode(rejection.replacement).record
    assert kept["reset_url"] == "[redacted]"
    assert {k: v for k, v in kept.items() if k != "reset_url"} == {k: v for k, v in event.items() if k != "reset_url"}


def test_undecodable_bytes_are_kept_as_they_are(pipeline: IngestPipeline) -> None:
    (rejection,) = _process(pipeline, b"\x00\x01\x02 opaque").rejections
    assert rejection.replacement is None and rejection.redacted == ()
