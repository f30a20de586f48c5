"""Timed rules as written in packs and tenants: shapes, conditions, projections, parameters."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streams.domain.conditions import matches
from streams.domain.projection import apply, public
from streams.domain.rules import Catalog, EntitySpec, PackFile, TimedRule
from streams.domain.tenants import TenantDirectory, TriggerSetting
from streams.errors import RejectedInput
from streams.settings import REPO_ROOT
from streams.state import values
from streams.tenants.validate import pack_problems
from streams.triggers.agents import parse_tick, tick_value

UTC = dt.timezone.utc
CATALOG = Catalog.load()
T0 = dt.datetime(2027, 1, 4, 8, tzinfo=UTC)


def _rule(**fields: Any) -> TimedRule:
    base = {"kind": "relative", "entity": "bookings", "at": "move_out_date", "offset": {"days": -7},
            "grace": {"days": 1}, "mails": [{"role": "customer", "recipient": "customer", "template": "x"}]}
    return TimedRule.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"offset": None}, "exactly one of `offset` and `steps`"),
        ({"steps": [3, 10]}, "exactly one of `offset` and `steps`"),
        ({"offset": None, "steps": [10, 3]}, "ascending"),
        ({"offset": {"minutes": -5}}, "days or hours"),
        ({"offset": {"days": -7, "hours": 3}}, "exactly one of days, hours, minutes"),
        ({"kind": "absence", "window": None, "offset": None}, "needs `window`"),
        ({"kind": "recurring", "at": None, "offset": None}, "needs `weekday`"),
        ({"grace": None}, "grace"),
    ],
)
def test_a_malformed_timed_rule_is_refused_with_the_reason(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _rule(**fields)


def test_a_pack_cannot_follow_an_undeclared_entity_or_feed_from_an_unrouted_event() -> None:
    pack = {"pack": "p", "languages": ["en"], "topics": {"things": ["p.Made"]}, "triggers": {}}
    with pytest.raises(ValidationError, match="does not declare"):
        PackFile.model_validate({**pack, "triggers": {"t": _rule(entity="nope").model_dump(exclude_none=True)}})
    with pytest.raises(ValidationError, match="no topic of the pack carries"):
        PackFile.model_validate({**pack, "entities": {"things": {"id": "id", "events": {"p.Other": {"set": {"a": 1}}}}}})
    with pytest.raises(ValidationError, match="unknown operator"):
        PackFile.model_validate({
            **pack, "entities": {"bookings": {"id": "id", "events": {"p.Made": {"set": {"a": 1}}}}},
            "triggers": {"t": _rule(when={"a": {"around": 3}}).model_dump(exclude_none=True)},
        })


def test_conditions() -> None:
    state = {"status": "active", "open_slots": 3, "profile": {"active": True}, "gone": None}
    assert matches({"status": "active", "open_slots": {"lt": "$min"}}, state, {"min": 5})
    assert not matches({"open_slots": {"lt": "$min"}}, state, {"min": 3})
    assert matches({"profile.active": True, "gone": {"present": False}, "status": {"in": ["active", "x"]}}, state)
    assert not matches({"missing": {"gt": 1}}, state)  # ordering against nothing is simply false
    assert not matches({"status": {"lt": 5}}, state)  # nor against a value of another type


def test_a_projection_copies_only_what_the_pack_names_and_never_mutates_the_old_state() -> None:
    spec = CATALOG.entity("advisors.conversations")
    first = {"envelope": {"occurred_at": T0}, "conversation_id": "c", "message_id": "m1", "sender_role": "customer",
             "sender_name": "Kim", "recipient": {"id": "a", "email": "a@example.org"}, "sent_at": T0,
             "conversation_url": "https://x.example/c"}
    state = apply(None, "tidings.advisors.MessageReceived", first, spec, tenant_id="t", entity_id="c", occurred_at=T0)
    assert state is not None
    assert public(state) == {"advisor": first["recipient"], "customer_name": "Kim", "conversation_url": "https://x.example/c",
                             "unanswered_since": T0, "awaiting_reply": True}
    later = {**first, "message_id": "m2", "sent_at": T0 + dt.timedelta(hours=3)}
    frozen = dict(state)
    again = apply(state, "tidings.advisors.MessageReceived", later, spec, tenant_id="t", entity_id="c",
                  occurred_at=T0 + dt.timedelta(hours=3))
    assert state == frozen and again is not None
    assert again["unanswered_since"] == T0  # copy_once: still waiting since the first message
    answered = apply(again, "tidings.advisors.MessageReceived", {**first, "sender_role": "advisor"}, spec,
                     tenant_id="t", entity_id="c", occurred_at=T0)
    assert answered is not None and answered["awaiting_reply"] is False and answered["unanswered_since"] is None


def test_an_event_that_concerns_no_stored_entity_creates_none() -> None:
    spec: EntitySpec = CATALOG.entity("advisors.conversations")
    read = {"envelope": {"occurred_at": T0}, "conversation_id": "c", "reader_role": "customer", "read_at": T0}
    assert apply(None, "tidings.advisors.MessageRead", read, spec, tenant_id="t", entity_id="c", occurred_at=T0) is None


def test_state_values_round_trip_dates_instants_and_nesting() -> None:
    state = {"d": dt.date(2027, 2, 28), "t": T0, "n": None, "nested": {"x": [1, "ü"]}}
    assert values.loads(values.dumps(state)) == state
    with pytest.raises(ValueError):
        values.dumps({"naive": dt.datetime(2027, 1, 1)})


def test_an_instant_is_written_as_itself_however_often_and_in_whatever_order_it_comes() -> None:
    from zoneinfo import ZoneInfo

    later = dt.datetime(2027, 3, 1, 9, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    equal = T0.astimezone(ZoneInfo("Asia/Tokyo"))  # the same instant, another zone: written as it is
    state = {"_since": T0, "a": T0, "b": later, "c": T0, "d": dt.date(2027, 1, 1), "e": equal, "f": [T0, later], "g": T0}
    def written(v: Any) -> Any:  # what tag writes, worked out afresh each time
        return {"$ts": v.isoformat()} if isinstance(v, dt.datetime) else {"$date": v.isoformat()}

    assert values.dumps(state) == json.dumps(state, default=written, separators=(",", ":")).encode()
    assert values.loads(values.dumps(state)) == state
    assert values.dumps({"t": later}) == b'{"t":{"$ts":"2027-03-01T09:30:00+01:00"}}'


@pytest.mark.parametrize(
    "value",
    [
        {"due": dt.date(2027, 2, 28), "at": T0, "fee": Decimal("12.50"), "list": [dt.date(2028, 2, 29), {"x": T0}]},
        [dt.date(2027, 1, 1), [[{"deep": Decimal("1")}]]],
        dt.date(2027, 1, 1),
        {"$ts": "not a tag", "other": 1},  # two keys: a plain mapping that happens to use the name
        {"big": 2**70, "negative": -(2**64) - 1, "u64": 2**64 - 1, "float": 1e300, "nested": [2**90]},
        2**80,
        {"nan": float("nan"), "inf": float("inf")},
        {"name": "Jana Müller \u2028 \" <script>", "none": None, "t": True, "f": 1.5},
        7,
        "text",
        None,
    ],
)
def test_stored_values_read_back_exactly_what_was_written(value: Any) -> None:
    # The fast reader (orjson) must agree with json and its tag hook on everything json writes,
    # including what orjson alone would misread: integers beyond 64 bits, NaN and Infinity.
    raw = values.dumps(value)
    exact = json.loads(raw, object_hook=values._hook)
    assert repr(values.loads(raw)) == repr(exact)
    assert repr(values.loads(raw.decode())) == repr(exact)


def test_tenant_parameters_are_checked_against_the_trigger() -> None:
    tenant = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants").get("lagerhaus-nord")
    assert tenant is not None
    triggers = dict(tenant.triggers)
    triggers["storage/booking.before_move_out"] = TriggerSetting(params={"days": 0, "weeks": 2})
    triggers["storage/invoice.after_due"] = TriggerSetting(params={"steps": [10, 3], "send_time": "25:00"})
    triggers["storage/booking.created"] = TriggerSetting(params={"days": 1})
    problems = [p for p in pack_problems(tenant.model_copy(update={"triggers": triggers}), CATALOG, Path(REPO_ROOT / "templates"))
                if ".params" in p[0]]
    assert sorted(m for _, m in problems) == sorted([
        "days must be a whole number of days from 1, not 0",
        "unknown parameter 'weeks'; storage/booking.before_move_out takes ['days', 'send_time']",
        "steps must be ascending whole numbers of days from 1, e.g. [3, 10, 20], not [10, 3]",
        "send_time must be a local time of day, 'HH:MM' (quoted), not '25:00'",
        "storage/booking.created is an event trigger and takes no parameters",
    ])


def test_a_tick_carries_an_aware_now_and_garbage_is_a_clear_rejection() -> None:
    assert parse_tick(tick_value(T0)) == T0
    for bad in (None, b"", b"{", b'{"now": "2027-01-04T08:00:00"}', b'{"then": 1}', b'{"now": "tomorrow"}'):
        with pytest.raises(RejectedInput) as caught:
            parse_tick(bad)
        assert caught.value.reason == "bad_tick"
