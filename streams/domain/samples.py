"""Sample events of a pack: one realistic record per event type, kept in ``samples.yaml``.

The file holds the event bodies without their envelope; ``sample_event`` adds a fresh envelope
(event id, tenant, time), so every use is a new, valid event. The demo, the preview gallery and
the tests that cover every trigger all draw from here, so a new pack gets all three by writing
its samples once.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from streams.errors import ConfigurationError

RECIPIENT_KEYS = frozenset({"id", "email"})


def load_samples(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigurationError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigurationError(f"{path}: expected a mapping of event type -> event fields")
    return {name: _aware(body) for name, body in data.items()}


def sample_event(
    samples: dict[str, dict[str, Any]],
    type_name: str,
    tenant_id: str,
    *,
    now: dt.datetime | None = None,
    recipient: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A new event from the sample, with a fresh envelope.

    ``recipient(path, person)`` may replace every recipient record (tests give each one a unique
    address); ``path`` is the dotted field path of the recipient in the event.
    """
    try:
        body = copy.deepcopy(samples[type_name])
    except KeyError:
        raise KeyError(f"no sample for {type_name}") from None
    if recipient is not None:
        body = _map_recipients(body, "", recipient)
    return {"envelope": new_envelope(tenant_id, now=now), **body}


def new_envelope(tenant_id: str, *, now: dt.datetime | None = None, producer: str = "sample") -> dict[str, Any]:
    """A fresh ``tidings.common.Envelope``: a new event id, as a producing service would make one."""
    return {
        "event_id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "occurred_at": now or dt.datetime.now(dt.timezone.utc),
        "producer": producer,
    }


def _map_recipients(value: Any, path: str, fn: Callable[[str, dict[str, Any]], dict[str, Any]]) -> Any:
    if isinstance(value, dict):
        if RECIPIENT_KEYS <= value.keys():
            return fn(path, value)
        return {k: _map_recipients(v, f"{path}.{k}" if path else k, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_recipients(v, f"{path}[{i}]", fn) for i, v in enumerate(value)]
    return value


def _aware(value: Any) -> Any:
    """YAML timestamps without a zone are UTC (Avro timestamp-millis is UTC)."""
    if isinstance(value, dict):
        return {k: _aware(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_aware(v) for v in value]
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def sample_state(catalog: Any, table: str, tenant_id: str, *, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """The state of one entity of ``table`` after each of its feeding events' samples, in pack order.

    For the preview gallery and the lint: a realistic state to render timed triggers from. Events
    that would forget the entity (an invoice paid) are left out, so the state is the live one.
    """
    from streams.domain.projection import apply

    spec = catalog.entity(table)
    state: dict[str, Any] | None = None
    now = now or dt.datetime.now(dt.timezone.utc)
    for type_name in spec.events:
        if any(u.forget for u in spec.updates(type_name)) or type_name not in catalog.samples:
            continue
        event = sample_event(catalog.samples, type_name, tenant_id, now=now)
        new = apply(state, type_name, event, spec, tenant_id=tenant_id, entity_id="sample", occurred_at=now)
        state = new if new is not None else state
    return state
