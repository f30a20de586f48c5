from __future__ import annotations

import datetime as dt

import pytest
from fastavro.schema import expand_schema

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.jsonvalues import from_json
from streams.errors import InvalidEvent

BOOKING = "tidings.storage.BookingCreated"
JSON_EVENT = {
    "envelope": {"tenant_id": "lagerhaus-nord", "occurred_at": "2026-11-23T09:30:00Z"},
    "booking_id": "BK-1",
    "customer": {"id": "c", "email": "a@example.org"},
    "unit_name": "A-1", "site_name": "S", "site_address": "Addr",
    "move_in_date": "2026-12-01",
    "move_out_date": "2027-06-30",
    "monthly_price": {"amount_minor": 4900, "currency": "EUR"},
}


def test_iso_strings_become_dates_and_instants_and_the_envelope_is_completed(codec: SingleObjectCodec) -> None:
    schema = expand_schema(codec.schemas.latest(BOOKING).parsed)
    event = from_json(schema, JSON_EVENT)
    assert event["move_in_date"] == dt.date(2026, 12, 1)
    assert event["move_out_date"] == dt.date(2027, 6, 30)
    assert event["envelope"]["occurred_at"] == dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone.utc)
    assert len(event["envelope"]["event_id"]) == 36
    assert codec.decode(codec.encode(BOOKING, event)).record["booking_id"] == "BK-1"


def test_a_malformed_date_names_the_field(codec: SingleObjectCodec) -> None:
    schema = expand_schema(codec.schemas.latest(BOOKING).parsed)
    with pytest.raises(InvalidEvent, match="move_in_date"):
        from_json(schema, {**JSON_EVENT, "move_in_date": "next Tuesday"})
