"""Which timers an entity's current state means: a pure function of state, tenant, rules and time.

``plan`` is called after every change of an entity (the timers are then replaced by its result:
a moved date moves the timer, a cancelled booking loses it) and again when a timer comes due
(fire-time revalidation: the timer fires only if the current state and tenant still plan it,
DESIGN invariant 2). Nothing here reads a clock or Kafka.

A timer is ``(due, slot, occurrence)``. The *slot* is the trigger key, with ``#<step>`` for the
steps of a dunning trigger: an entity has at most one pending timer per slot. The *occurrence*
names what the mail is about (the move-out date, the instant of the last heartbeat, the local
date of a Wednesday) and goes into the message id, so the same reminder computed twice, after a
replay or a rebalance, is the same mail; a moved date is a new occurrence, hence a new mail.
``done`` maps each slot to the occurrence that last fired (or was skipped) so that an unchanged
occurrence is never planned again, while a new one is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.domain import schedule
from streams.domain.conditions import lookup, matches
from streams.domain.projection import public
from streams.domain.rules import WEEKDAYS, Span, TimedRule, Trigger
from streams.domain.tenants import Tenant
from streams.errors import ConfigurationError

UTC = dt.timezone.utc


@dataclass(frozen=True, order=True)
class Timer:
    due: dt.datetime
    slot: str
    occurrence: str
    step: int = 0  # 1-based step of a dunning trigger, 0 otherwise

    @property
    def trigger_key(self) -> str:
        return self.slot.split("#", 1)[0]

    def to_json(self) -> list[Any]:
        return [self.due.timestamp(), self.slot, self.occurrence, self.step]

    @classmethod
    def from_json(cls, value: list[Any]) -> Timer:
        return cls(dt.datetime.fromtimestamp(value[0], UTC), value[1], value[2], value[3])


def span(rule_span: Span, params: Mapping[str, Any]) -> dt.timedelta:
    """The rule's span, with the tenant's figure for its unit when the tenant set one."""
    amount = params.get(rule_span.unit, abs(rule_span.amount))
    sign = -1 if rule_span.amount < 0 else 1
    return dt.timedelta(**{rule_span.unit: sign * int(amount)})


def send_time(tenant: Tenant, params: Mapping[str, Any]) -> dt.time:
    value = params.get("send_time")
    if value is None:
        return tenant.default_send_time
    return dt.time.fromisoformat(str(value))


def trigger_params(trigger: Trigger, tenant: Tenant) -> dict[str, Any]:
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    setting = tenant.triggers.get(trigger.key)
    return {**rule.params, **(setting.params if setting else {})}


def plan(
    triggers: list[Trigger],
    state: Mapping[str, Any],
    tenant: Tenant,
    done: Mapping[str, str],
    now: dt.datetime,
) -> list[Timer]:
    """The timers the entity should have now: one per slot whose trigger is on and applies.

    ``now`` matters only to recurring triggers (the next Wednesday after now or after the last
    one sent); date-based timers do not depend on it, a past due time is judged when it fires.
    """
    fields = public(state)
    return [t for trigger in triggers for t in plan_trigger(trigger, fields, tenant, done, now)]


def plan_trigger(
    trigger: Trigger,
    fields: Mapping[str, Any],
    tenant: Tenant,
    done: Mapping[str, str],
    now: dt.datetime,
    only_slot: str | None = None,
) -> list[Timer]:
    """``plan`` for one trigger, on the public state fields (``projection.public``).

    ``only_slot``: just the timer of that slot, if planned (fire-time revalidation needs no other).
    """
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    settings = settings_of(trigger, tenant)
    if not settings.on:
        return []
    if rule.when and not matches(rule.when, fields, settings.params):
        return []
    first = None
    for path in settings.recipients:
        recipient = lookup(fields, path)
        # lookup(fields, f"{path}.email"), one step at a time: the first recipient's zone is read below
        email = recipient.get("email") if type(recipient) is dict or isinstance(recipient, Mapping) else None
        if not isinstance(email, str):
            return []  # the state does not know whom to mail (a heartbeat of an unregistered station)
        if first is None:
            first = recipient
    # The recipient's zone when the state knows it, else the tenant's (the first mail's recipient).
    zone = first.get("time_zone") if first is not None else None
    timers = _timers(rule, fields, str(zone) if zone else tenant.time_zone, settings, done, now, only_slot)
    return [t for t in timers if done.get(t.slot) != t.occurrence] if done else timers


@dataclass(frozen=True)
class TriggerSettings:
    """What a tenant's configuration makes of one trigger; ``on`` False leaves the rest unset."""

    on: bool
    params: Mapping[str, Any] = field(default_factory=dict)  # shared: read, never written
    recipients: tuple[str, ...] = ()  # the state paths of the mails' recipients, in the rule's order
    key: str = ""  # the trigger's key: the slot of its timers (``Trigger.key`` formats it anew each time)
    send_time: dt.time = dt.time(9)
    steps: tuple[int, ...] = ()
    offset: dt.timedelta | None = None
    window: dt.timedelta | None = None


_SETTINGS: dict[tuple[int, int], tuple[Trigger, Tenant, TriggerSettings]] = {}
_SETTINGS_KEPT = 4096


def settings_of(trigger: Trigger, tenant: Tenant) -> TriggerSettings:
    """``TriggerSettings`` of a trigger for a tenant, computed once per pair of objects.

    A tick revalidates ten thousand timers of the same few triggers and tenants; merging the
    parameters and parsing the send time for each was a fifth of the decision. Tenants and
    triggers are frozen (a changed tenant is a new object), so the pair's identity is the key;
    the objects are kept with the entry so an id is never reused while it is cached.
    """
    key = (id(trigger), id(tenant))
    hit = _SETTINGS.get(key)
    if hit is not None and hit[0] is trigger and hit[1] is tenant:
        return hit[2]
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    if trigger.pack not in tenant.packs or not tenant.is_enabled(trigger.key, rule.enabled_by_default):
        settings = TriggerSettings(on=False)
    else:
        params = trigger_params(trigger, tenant)
        settings = TriggerSettings(
            on=True,
            params=params,
            recipients=tuple(m.recipient for m in rule.mails),
            key=trigger.key,
            send_time=send_time(tenant, params),
            steps=tuple(int(s) for s in params.get("steps", rule.steps or ())),
            offset=span(rule.offset, params) if rule.offset is not None else None,
            window=span(rule.window, params) if rule.window is not None else None,
        )
    if len(_SETTINGS) >= _SETTINGS_KEPT:
        _SETTINGS.clear()
    _SETTINGS[key] = (trigger, tenant, settings)
    return settings


def _timers(
    rule: TimedRule,
    fields: Mapping[str, Any],
    zone: str,
    settings: TriggerSettings,
    done: Mapping[str, str],
    now: dt.datetime,
    only_slot: str | None,
) -> list[Timer]:
    """The timers of one trigger, before those already done are taken out, in the recipient's ``zone``."""
    at = settings.send_time
    key = settings.key
    kind = rule.kind
    if kind == "recurring":
        assert rule.weekday is not None
        weekday = WEEKDAYS.index(rule.weekday)
        after = now
        last = done.get(key)
        if last:  # the Wednesday after the one already sent, even if `now` is still that day
            after = max(after, schedule.local_instant(dt.date.fromisoformat(last), at, zone))
        due = schedule.next_weekly(after, weekday, at, zone)
        return [Timer(due, key, due.astimezone(schedule._zone(zone)).date().isoformat())]
    assert rule.at is not None
    anchor = lookup(fields, rule.at)
    if anchor is None:
        return []
    if not isinstance(anchor, dt.date):
        raise ConfigurationError(f"{key}: state field {rule.at} is {type(anchor).__name__}, not a date or instant")
    occurrence = anchor.isoformat()
    if kind == "absence":
        assert settings.window is not None
        if not isinstance(anchor, dt.datetime):
            raise ConfigurationError(f"{key}: absence needs an instant in {rule.at}")
        due = schedule.absence_due(anchor, settings.window)
        confirmed = lookup(fields, rule.confirmed_by) if rule.confirmed_by else None
        if isinstance(confirmed, dt.datetime) and confirmed >= anchor:
            due = min(due, confirmed.astimezone(UTC))
        return [Timer(due, key, occurrence)]
    if kind == "date":
        return [Timer(schedule.date_due(_local_date(anchor, zone), at, zone), key, occurrence)]
    if rule.steps is not None:
        timers = []
        for n, days in enumerate(settings.steps, start=1):
            slot = f"{key}#{n}"
            if only_slot is None or slot == only_slot:
                timers.append(Timer(schedule.relative_due(_local_date(anchor, zone), days, at, zone), slot, occurrence, n))
        return timers
    offset = settings.offset
    assert rule.offset is not None and offset is not None
    if rule.offset.hours is not None:  # Span.unit == "hours"
        if not isinstance(anchor, dt.datetime):
            raise ConfigurationError(f"{key}: an offset in hours needs an instant in {rule.at}")
        return [Timer(anchor.astimezone(UTC) + offset, key, occurrence)]
    return [Timer(schedule.relative_due(_local_date(anchor, zone), offset.days, at, zone), key, occurrence)]


def _local_date(anchor: dt.date, zone: str) -> dt.date:
    if isinstance(anchor, dt.datetime):
        return anchor.astimezone(schedule._zone(zone)).date()
    return anchor


def param_problems(trigger: Trigger, params: Mapping[str, Any]) -> list[str]:
    """What is wrong with a tenant's parameters for a timed trigger (checked when it is published)."""
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    allowed: dict[str, str] = {name: "like the pack's default" for name in rule.params}
    allowed["send_time"] = "a local time of day, 'HH:MM'"
    for s in (rule.offset, rule.window):
        if s is not None:
            allowed[s.unit] = f"a whole number of {s.unit} from 1"
    if rule.steps is not None:
        allowed["steps"] = "ascending whole numbers of days from 1, e.g. [3, 10, 20]"
    out = []
    for name, value in params.items():
        if name not in allowed:
            out.append(f"unknown parameter {name!r}; {trigger.key} takes {sorted(allowed)}")
        elif name in ("days", "hours", "minutes") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            out.append(f"{name} must be {allowed[name]}, not {value!r}")
        elif name == "steps" and not (
            isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
            and value == sorted(set(value))
        ):
            out.append(f"steps must be {allowed['steps']}, not {value!r}")
        elif name == "send_time":
            try:
                t = dt.time.fromisoformat(str(value))
                if not isinstance(value, str) or t.tzinfo is not None:
                    raise ValueError
            except ValueError:
                out.append(f"send_time must be {allowed['send_time']} (quoted), not {value!r}")
        elif name in rule.params and type(value) is not type(rule.params[name]):
            out.append(f"{name} must be a {type(rule.params[name]).__name__} like the default {rule.params[name]!r}")
    return out
