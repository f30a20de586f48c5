"""The mails a due timer means: firings and render context of a timed trigger.

Pure, like ``streams/domain/evaluate.py`` for event triggers. The render context of a timed mail is the entity
state (the fields the pack copies, see ``domain/projection.py``) plus ``timer``: when it was due,
the step of a dunning trigger (1, 2, 3; 0 otherwise), how many steps there are, and the
trigger's effective parameters (``timer.params.days`` is the "x" of "x days before").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from streams.domain.conditions import lookup
from streams.domain.evaluate import Firing
from streams.domain.identity import message_id
from streams.domain.projection import public
from streams.domain.rules import TimedRule, Trigger
from streams.domain.tenants import Tenant
from streams.domain.timers import Timer, span, trigger_params


def timed_firings(trigger: Trigger, timer: Timer, state: Mapping[str, Any], tenant: Tenant, entity_id: str) -> list[Firing]:
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    firings = []
    for mail in rule.mails:
        recipient = lookup(state, mail.recipient)
        if not isinstance(recipient, Mapping) or not recipient.get("email"):
            continue  # plan() only schedules when every recipient is known; a mail without one is skipped
        firings.append(
            Firing(
                trigger=trigger,
                mail=mail,
                entity_id=entity_id,
                occurrence=timer.occurrence,
                recipient=recipient,
                message_id=message_id(
                    tenant_id=tenant.tenant_id,
                    trigger=f"{timer.slot}#{mail.template}",
                    entity_id=entity_id,
                    occurrence=timer.occurrence,
                    recipient=str(recipient["email"]),
                ),
            )
        )
    return firings


def timed_context(
    trigger: Trigger, timer: Timer, state: Mapping[str, Any], tenant: Tenant, entity_fields: Iterable[str] = ()
) -> dict[str, Any]:
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    params = trigger_params(trigger, tenant)
    effective = dict(params)
    for s in (rule.offset, rule.window):
        if s is not None:
            effective[s.unit] = abs(int(span(s, params) / _UNIT[s.unit]))
    steps = params.get("steps", rule.steps)
    if steps is not None:
        effective["steps"] = list(steps)
    # A field no event has written yet (a booking first seen through its renewal notice has no
    # site address) is null, not undefined: templates test it like any optional event field.
    known = dict.fromkeys(entity_fields, None)
    return {
        **known,
        **public(state),
        "timer": {
            "due_at": timer.due,
            "step": timer.step,
            "steps": len(steps) if steps is not None else 0,
            "params": effective,
        },
    }


_UNIT = {"days": dt.timedelta(days=1), "hours": dt.timedelta(hours=1), "minutes": dt.timedelta(minutes=1)}
