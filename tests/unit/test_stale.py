"""Nothing stale (DESIGN invariant 10): an event older than its trigger's max age sends nothing."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.codecs.avro import SingleObjectCodec
from streams.domain.rules import STALE_DEFAULT, STALE_HIGH, Catalog, EventRule
from streams.domain.samples import sample_event
from streams.ingest.pipeline import IngestPipeline
from tests.unit.conftest import NOW

CATALOG = Catalog.load()
RESET = "tidings.storage.PasswordResetRequested"
BOOKING = "tidings.storage.BookingCreated"


def _process(pipeline: IngestPipeline, codec: SingleObjectCodec, type_name: str, age: dt.timedelta):  # type: ignore[no-untyped-def]
    event = sample_event(CATALOG.samples, type_name, "lagerhaus-nord", now=NOW - age)
    return pipeline.process(codec.encode(type_name, event), topic="t", timestamp=NOW, now=NOW)


@pytest.mark.parametrize(
    ("type_name", "age", "sent"),
    [
        (RESET, dt.timedelta(minutes=59), True),
        (RESET, dt.timedelta(minutes=61), False),  # a reset link an hour old is useless
        (BOOKING, dt.timedelta(days=6, hours=23), True),
        (BOOKING, dt.timedelta(days=7, minutes=1), False),
        (BOOKING, -dt.timedelta(days=30), True),  # a clock ahead of ours is no reason to drop a mail
    ],
)
def test_an_event_older_than_its_triggers_max_age_sends_nothing(
    pipeline: IngestPipeline, codec: SingleObjectCodec, type_name: str, age: dt.timedelta, sent: bool
) -> None:
    result = _process(pipeline, codec, type_name, age)
    assert bool(result.mails) is sent and bool(result.stale) is not sent
    assert not result.rejections
    assert result.record is not None  # the event itself is accepted: its state still updates


def test_the_default_max_age_follows_the_priority_and_a_pack_can_set_its_own() -> None:
    reset = next(t for t in CATALOG.for_event(RESET))
    booking = next(t for t in CATALOG.for_event(BOOKING))
    assert isinstance(reset.rule, EventRule) and reset.rule.age_limit == STALE_HIGH
    assert isinstance(booking.rule, EventRule) and booking.rule.age_limit == STALE_DEFAULT
    own = EventRule.model_validate({**booking.rule.model_dump(), "max_age": {"hours": 2}})
    assert own.age_limit == dt.timedelta(hours=2)
