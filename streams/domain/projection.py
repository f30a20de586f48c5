"""Entity projections: how an event changes the state a table keeps for its entity.

Pure. ``apply`` takes the stored state (or None), the decoded event and the pack's entity spec,
and returns the new state, or None when the entity is forgotten (or an event that
concerns no stored entity creates none). The state is a new dict every
time (table values are reassigned, never mutated in place). Keys starting with ``_`` are kept
by Tidings itself: ``_tenant``, ``_id``, ``_since`` (first event), ``_updated_at`` (last event);
the rest are the fields the pack copies, and only those (DESIGN invariant 7: least data).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from streams.domain.conditions import lookup, matches
from streams.domain.rules import EntitySpec

RESERVED = ("_tenant", "_id", "_since", "_updated_at")


def apply(
    state: Mapping[str, Any] | None,
    type_name: str,
    event: Mapping[str, Any],
    spec: EntitySpec,
    *,
    tenant_id: str,
    entity_id: str,
    occurred_at: dt.datetime,
) -> dict[str, Any] | None:
    new: dict[str, Any] = dict(state) if state else {"_tenant": tenant_id, "_id": entity_id, "_since": occurred_at}
    applied = False
    for update in spec.updates(type_name):
        if update.when and not matches(update.when, event):
            continue
        applied = True
        if update.forget:
            return None
        for field, path in update.copies().items():
            new[field] = lookup(event, path)
        for field, path in update.copies(once=True).items():
            if new.get(field) is None:
                new[field] = lookup(event, path)
        new.update(update.set)
    if not applied:
        return dict(state) if state else None  # nothing of this event concerns the entity
    new["_updated_at"] = occurred_at
    return new


def public(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state as templates and conditions see it: without Tidings' own keys."""
    return {k: v for k, v in state.items() if k[:1] != "_"}  # a slice, not a method call: per timer fired
