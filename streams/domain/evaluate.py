"""Which mails an event means: a pure function of the decoded event, the catalog and the tenant.

The result is a list of ``Firing`` values, each naming the trigger, the entity, the occurrence,
the recipient and the deterministic message id. Rendering and sending happen elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.domain.identity import message_id
from streams.domain.rules import Catalog, MailRule, Trigger
from streams.domain.tenants import Tenant
from streams.errors import InvalidEvent, UnknownEventType


@dataclass(frozen=True)
class Firing:
    """One mail that must be rendered and sent."""

    trigger: Trigger
    mail: MailRule
    entity_id: str
    occurrence: str
    recipient: Mapping[str, Any]
    message_id: str


def field_at(record: Mapping[str, Any], path: str) -> Any:
    """Follow a dotted path through nested records.

    A missing step, a null or an empty string is an ``InvalidEvent``: Avro guarantees a field is
    present, but an empty id or address is just as unusable as an absent one.
    """
    value: Any = record
    steps = _STEPS.get(path)
    if steps is None:
        steps = _STEPS[path] = tuple(path.split("."))
    for step in steps:
        # type() first, as conditions.lookup does: records are plain dicts, and the ABC isinstance
        # cost more than the rest of a step (eight paths an event)
        if not (type(value) is dict or isinstance(value, Mapping)) or value.get(step) in (None, ""):
            raise InvalidEvent(f"field {path!r} is missing or empty", reason="missing_field")
        value = value[step]
    return value


_STEPS: dict[str, tuple[str, ...]] = {}  # the paths of the packs' rules: a few hundred


def event_firings(type_name: str, record: Mapping[str, Any], catalog: Catalog, tenant: Tenant) -> list[Firing]:
    """The mails an event trigger sends for this event, for the triggers the tenant has on.

    An event that only feeds entity state (a station heartbeat) fires nothing here.
    """
    triggers = catalog.for_event(type_name)
    if not catalog.handles(type_name):
        raise UnknownEventType(f"no pack handles {type_name}")
    occurrence = str(field_at(record, "envelope.event_id"))
    firings = []
    for trigger in triggers:
        if trigger.pack not in tenant.packs or not tenant.is_enabled(trigger.key, trigger.rule.enabled_by_default):
            continue
        entity_id = str(field_at(record, trigger.rule.entity))
        for mail in trigger.rule.mails:
            recipient = field_at(record, mail.recipient)
            email = field_at(recipient, "email")
            firings.append(
                Firing(
                    trigger=trigger,
                    mail=mail,
                    entity_id=entity_id,
                    occurrence=occurrence,
                    recipient=recipient,
                    message_id=message_id(
                        tenant_id=tenant.tenant_id,
                        trigger=f"{trigger.key}#{mail.template}",
                        entity_id=entity_id,
                        occurrence=occurrence,
                        recipient=email,
                    ),
                )
            )
    return firings
