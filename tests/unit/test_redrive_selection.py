"""Re-drive selection: parsing dead letters, filters, what may go back and where it goes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.codecs.avro import SingleObjectCodec
from streams.delivery.ledger import REDRIVE_HEADER
from streams.domain.rules import Catalog
from streams.ingest.pipeline import IngestPipeline, Rejection
from streams.outcomes import dead_letter_headers
from streams.redrive.selection import (
    About,
    DeadLetter,
    Selection,
    describe,
    mask_address,
    republish,
    verdict,
)
from streams.settings import Settings
from streams.topics import TopicNames
from tests.unit.conftest import NOW

CATALOG = Catalog.load()
TOPICS = TopicNames.from_settings(Settings(topic_prefix="t.", partitions=4), CATALOG)
BOOKINGS = TOPICS.for_event(BOOKING_CREATED)
AT_MS = int(NOW.timestamp() * 1000)


def dead_letter(rejection: Rejection, value: bytes | None, *, topic: str, partition: int = 2, offset: int = 7,
                key: bytes | None = b"BK-1", dl_offset: int = 40, headers: list[Any] | None = None) -> DeadLetter:
    written = dead_letter_headers(rejection, topic=topic, partition=partition, offset=offset) if headers is None else headers
    return DeadLetter.from_record(partition, dl_offset, AT_MS, key, value, written)


@pytest.fixture(scope="module")
def decode(codec: SingleObjectCodec):  # type: ignore[no-untyped-def]
    def decode(topic: str, data: bytes | None) -> tuple[str, dict[str, Any]]:
        decoded = codec.decode(data)
        return decoded.type_name, decoded.record
    return decode


def about(dl: DeadLetter, decode) -> About:  # type: ignore[no-untyped-def]
    return describe(dl, decode, TOPICS.outbound, lambda t: [tr.key for tr in CATALOG.for_event(t)],
                    lambda t: bool(CATALOG.feeds(t)))


def judge(dl: DeadLetter, decode, **kw: Any) -> str | None:  # type: ignore[no-untyped-def]
    return verdict(dl, about(dl, decode), inbound=TOPICS.inbound, outbound=TOPICS.outbound, partitions=4, **kw)


@pytest.fixture(scope="module")
def event(codec: SingleObjectCodec) -> bytes:
    return codec.encode(BOOKING_CREATED, booking_created("boxit-london", 3, email="jane.doe@example.org"))


@pytest.fixture(scope="module")
def mail(pipeline: IngestPipeline, event: bytes) -> tuple[str, bytes]:
    (rendered,) = pipeline.process(event, topic=BOOKINGS, timestamp=NOW, now=NOW).mails
    return rendered.record["message_id"], pipeline.encode(rendered.record)


def rejected(mail: tuple[str, bytes], **kw: Any) -> DeadLetter:
    message_id, value = mail
    return dead_letter(Rejection("deliver", "rejected_by_provider", "ses:MessageRejected", message_id), value,
                       topic=TOPICS.outbound, key=message_id.encode(), **kw)


# -- parsing -----------------------------------------------------------------------------------


def test_a_dead_letter_is_read_back_from_the_headers_the_workers_write(mail: tuple[str, bytes]) -> None:
    dl = rejected(mail)
    assert (dl.stage, dl.reason, dl.source_topic, dl.source_partition, dl.source_offset) == (
        "deliver", "rejected_by_provider", TOPICS.outbound, 2, 7)
    assert dl.message_id == mail[0] and not dl.redacted
    assert dl.timestamp == NOW


@pytest.mark.parametrize("headers", [
    None,
    [],
    [("tidings.stage", b"\xff\xfe"), ("tidings.source.partition", b"-3"), ("tidings.source.offset", b"x")],
    [("tidings.reason", None), ("tidings.stage", b"deliver" * 1000)],
], ids=["none", "empty", "garbled", "null-and-huge"])
def test_missing_or_garbled_headers_give_a_record_that_is_skipped_not_an_exception(headers: Any, decode) -> None:  # type: ignore[no-untyped-def]
    dl = DeadLetter.from_record(0, 1, None, None, b"\x00garbage", headers)
    assert dl.source_partition is None and dl.source_offset is None and dl.timestamp is None
    assert len(dl.stage) <= 256
    assert judge(dl, decode) is not None


# -- what the value says -------------------------------------------------------------------------


def test_a_mail_is_described_by_tenant_trigger_id_and_a_masked_recipient(mail: tuple[str, bytes], decode) -> None:  # type: ignore[no-untyped-def]
    a = about(rejected(mail), decode)
    assert (a.tenant, a.triggers, a.message_id, a.recipient) == (
        "boxit-london", ("storage/booking.created",), mail[0], "j***@example.org")


def test_an_event_is_described_by_tenant_its_triggers_and_whether_it_feeds_state(event: bytes, decode) -> None:  # type: ignore[no-untyped-def]
    a = about(dead_letter(Rejection("ingest", "unknown_tenant", "x"), event, topic=BOOKINGS), decode)
    assert (a.tenant, a.triggers, a.event_type, a.feeds_state, a.recipient) == (
        "boxit-london", ("storage/booking.created",), BOOKING_CREATED, True, None)


def test_a_value_that_does_not_decode_is_described_as_unknown(decode) -> None:  # type: ignore[no-untyped-def]
    assert about(dead_letter(Rejection("ingest", "not_avro", "x"), b"junk", topic=BOOKINGS), decode) == About()


@pytest.mark.parametrize(("address", "masked"), [
    ("jane.doe@example.org", "j***@example.org"), ("x@y.z", "x***@y.z"), ("no-at-sign", "***"), ("@example.org", "***"),
    ("", "***"),
])
def test_addresses_are_masked(address: str, masked: str) -> None:
    assert mask_address(address) == masked


# -- filters ---------------------------------------------------------------------------------------


def test_each_filter_selects_on_its_own_field(mail: tuple[str, bytes], decode) -> None:  # type: ignore[no-untyped-def]
    dl = rejected(mail)
    a = about(dl, decode)
    hour = dt.timedelta(hours=1)
    assert Selection().matches(dl, a)
    for matching, other in [
        (Selection(stages=frozenset({"deliver"})), Selection(stages=frozenset({"render"}))),
        (Selection(reasons=frozenset({"rejected_by_provider"})), Selection(reasons=frozenset({"render_failed"}))),
        (Selection(tenants=frozenset({"boxit-london"})), Selection(tenants=frozenset({"voltpark-nl"}))),
        (Selection(triggers=frozenset({"storage/booking.created"})), Selection(triggers=frozenset({"storage/booking.cancelled"}))),
        (Selection(message_ids=frozenset({mail[0]})), Selection(message_ids=frozenset({"0" * 32}))),
        (Selection(since=NOW), Selection(since=NOW + hour)),
        (Selection(until=NOW + hour), Selection(until=NOW)),
        (Selection(stages=frozenset({"deliver", "render"}), tenants=frozenset({"boxit-london"})),
         Selection(stages=frozenset({"deliver"}), tenants=frozenset({"voltpark-nl"}))),
    ]:
        assert matching.matches(dl, a), matching
        assert not other.matches(dl, a), other


def test_a_tenant_filter_never_matches_what_does_not_decode(decode) -> None:  # type: ignore[no-untyped-def]
    dl = dead_letter(Rejection("ingest", "not_avro", "x"), b"junk", topic=BOOKINGS)
    assert not Selection(tenants=frozenset({"boxit-london"})).matches(dl, about(dl, decode))


def test_a_time_window_never_matches_a_record_without_a_timestamp(mail: tuple[str, bytes], decode) -> None:  # type: ignore[no-untyped-def]
    dl = DeadLetter.from_record(0, 1, None, None, mail[1], dead_letter_headers(
        Rejection("deliver", "rejected_by_provider", "x", mail[0]), topic=TOPICS.outbound, partition=0, offset=1))
    assert not Selection(since=NOW).matches(dl, about(dl, decode))


# -- what may go back ---------------------------------------------------------------------------


@pytest.mark.parametrize(("stage", "reason"), [
    ("deliver", "rejected_by_provider"), ("deliver", "attachment_missing"), ("deliver", "internal_error"),
])
def test_mails_that_failed_for_outside_reasons_may_be_re_sent(mail: tuple[str, bytes], decode, stage: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    dl = dead_letter(Rejection(stage, reason, "x", mail[0]), mail[1], topic=TOPICS.outbound, key=mail[0].encode())
    assert judge(dl, decode) is None


@pytest.mark.parametrize(("stage", "reason"), [
    ("ingest", "unknown_tenant"), ("ingest", "unknown_event_type"), ("ingest", "unknown_schema"),
    ("ingest", "internal_error"), ("state", "bad_state"),
])
def test_events_that_failed_for_outside_reasons_may_be_re_ingested(event: bytes, decode, stage: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    assert judge(dead_letter(Rejection(stage, reason, "x"), event, topic=BOOKINGS), decode) is None


@pytest.mark.parametrize(("stage", "reason", "why"), [
    ("ingest", "corrupt_body", "corrupt"),
    ("ingest", "not_avro", "not Avro"),
    ("ingest", "empty", "empty"),
    ("ingest", "missing_field", "lacks a field"),
    ("render", "invalid_recipient", "address"),
    ("tick", "bad_tick", "ticks"),
    ("render", "corrupt_firing", "not an event"),
    ("ingest", "something_new", "'something_new' is not re-drivable"),
    ("publish", "unknown_tenant", "stage 'publish'"),
])
def test_records_that_would_fail_again_are_refused_with_the_reason(event: bytes, decode, stage: str, reason: str, why: str) -> None:  # type: ignore[no-untyped-def]
    refused = judge(dead_letter(Rejection(stage, reason, "x"), event, topic=BOOKINGS), decode)
    assert refused is not None and why in refused


def test_a_redacted_copy_is_refused(event: bytes, decode) -> None:  # type: ignore[no-untyped-def]
    dl = dead_letter(Rejection("ingest", "unknown_tenant", "x", redacted=("reset_url",)), event, topic=BOOKINGS)
    assert "redacted" in (judge(dl, decode) or "")


def test_a_timer_reference_from_the_firings_topic_is_refused(decode) -> None:  # type: ignore[no-untyped-def]
    dl = dead_letter(Rejection("render", "render_failed", "x", "m" * 32), b'{"table": "storage.bookings"}', topic=TOPICS.firings)
    assert "not an inbound topic" in (judge(dl, decode) or "")


@pytest.mark.parametrize("topic", ["t.tenants", "t.outbound", "other.storage.bookings", ""])
def test_an_event_never_goes_to_a_topic_other_than_an_inbound_one(event: bytes, decode, topic: str) -> None:  # type: ignore[no-untyped-def]
    assert "not an inbound topic" in (judge(dead_letter(Rejection("ingest", "unknown_tenant", "x"), event, topic=topic), decode) or "")


def test_a_mail_never_goes_to_a_topic_other_than_the_outbound_one(mail: tuple[str, bytes], decode) -> None:  # type: ignore[no-untyped-def]
    dl = dead_letter(Rejection("deliver", "rejected_by_provider", "x", mail[0]), mail[1], topic="t.tenants")
    assert "outbound" in (judge(dl, decode) or "")


def test_a_source_partition_this_deployment_lacks_is_refused(event: bytes, decode) -> None:  # type: ignore[no-untyped-def]
    assert "partition" in (judge(dead_letter(Rejection("ingest", "unknown_tenant", "x"), event, topic=BOOKINGS, partition=4), decode) or "")


def test_a_mail_without_its_message_id_or_with_another_one_is_refused(mail: tuple[str, bytes], decode) -> None:  # type: ignore[no-untyped-def]
    missing = dead_letter(Rejection("deliver", "rejected_by_provider", "x"), mail[1], topic=TOPICS.outbound)
    other = dead_letter(Rejection("deliver", "rejected_by_provider", "x", "f" * 32), mail[1], topic=TOPICS.outbound)
    assert "message id" in (judge(missing, decode) or "")
    assert "not the outbound record" in (judge(other, decode) or "")


def test_a_render_failure_of_an_event_that_feeds_state_needs_reapply_state(event: bytes, decode) -> None:  # type: ignore[no-untyped-def]
    dl = dead_letter(Rejection("render", "render_failed", "x", "m" * 32), event, topic=BOOKINGS)
    assert "--reapply-state" in (judge(dl, decode) or "")
    assert judge(dl, decode, reapply_state=True) is None


def test_a_render_failure_of_an_event_without_state_may_be_re_ingested(codec: SingleObjectCodec, decode) -> None:  # type: ignore[no-untyped-def]
    from streams.domain.samples import sample_event

    type_name = "tidings.advisors.CallbackRequested"
    value = codec.encode(type_name, sample_event(CATALOG.samples, type_name, "beraterfinder"))
    dl = dead_letter(Rejection("render", "render_failed", "x", "m" * 32), value, topic=TOPICS.for_event(type_name))
    assert judge(dl, decode) is None


# -- where it goes -------------------------------------------------------------------------------


def test_a_mail_goes_back_to_its_outbound_partition_keyed_by_its_id_and_marked(mail: tuple[str, bytes]) -> None:
    record = republish(rejected(mail, partition=3), "run-1", "t.dead-letter")
    assert (record.topic, record.partition, record.key, record.value) == (TOPICS.outbound, 3, mail[0].encode(), mail[1])
    assert dict(record.headers) == {REDRIVE_HEADER: b"run-1", "tidings-redrive-from": b"t.dead-letter/3/40"}


def test_an_event_goes_back_to_its_topic_and_partition_with_its_key(event: bytes) -> None:
    dl = dead_letter(Rejection("ingest", "unknown_tenant", "x"), event, topic=BOOKINGS, partition=1, key=b"BK-9")
    record = republish(dl, "run-1", "t.dead-letter")
    assert (record.topic, record.partition, record.key, record.value) == (BOOKINGS, 1, b"BK-9", event)
    assert dict(record.headers)[REDRIVE_HEADER] == b"run-1"


def test_several_dead_letters_of_one_event_or_one_mail_are_one_republish(event: bytes, mail: tuple[str, bytes]) -> None:
    first = dead_letter(Rejection("render", "render_failed", "x", "a" * 32), event, topic=BOOKINGS, dl_offset=1)
    second = dead_letter(Rejection("render", "render_failed", "x", "b" * 32), event, topic=BOOKINGS, dl_offset=2)
    later = dead_letter(Rejection("render", "render_failed", "x", "a" * 32), event, topic=BOOKINGS, offset=8, dl_offset=3)
    assert republish(first, "r", "dl").dedupe == republish(second, "r", "dl").dedupe != republish(later, "r", "dl").dedupe
    assert republish(rejected(mail, dl_offset=1), "r", "dl").dedupe == republish(rejected(mail, dl_offset=9), "r", "dl").dedupe
