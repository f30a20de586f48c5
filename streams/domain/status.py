"""Delivery-status records: one per state change of a mail, for the producing services.

A producing service that wants to know what became of its mails reads ``<prefix>delivery-status``
(key: message id): SENT (with the SES message id) or FAILED (with the dead-letter reason);
SUPPRESSED when the mail is not sent on purpose: the suppression list (at the sender), or, with
reason ``customer_inactive``, a mail never rendered because its recipient is an inactive customer
(``streams/customers/``). Where ``TIDINGS_QUEUED_STATUS`` is on, QUEUED comes first, when the mail
is rendered onto the outbound topic (``streams/delivery/outbox.py``). Records are written in the
same exactly-once transaction, on the same partition number, as the work they report, so a status
never describes something that was rolled back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

SCHEMA = "tidings.outbound.DeliveryStatus"
QUEUED, SENT, SUPPRESSED, FAILED = "QUEUED", "SENT", "SUPPRESSED", "FAILED"


def firing_fields(firing: Any, tenant_id: str, source_event_id: str) -> dict[str, Any]:
    """What a status record needs of a mail that was decided but never rendered (a ``Firing``)."""
    return {
        "message_id": firing.message_id,
        "tenant_id": tenant_id,
        "pack": firing.trigger.pack,
        "trigger": firing.trigger.id,
        "entity_id": firing.entity_id,
        "source_event_id": source_event_id,
    }


def status_record(
    mail: dict[str, Any], status: str, at: dt.datetime, *, provider_id: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """The status record of ``mail`` (an outbound record, or a firing's fields) entering ``status``."""
    return {
        "message_id": mail["message_id"],
        "tenant_id": mail["tenant_id"],
        "pack": mail["pack"],
        "trigger": mail["trigger"],
        "entity_id": mail["entity_id"],
        "source_event_id": mail["source_event_id"],
        "status": status,
        "provider_message_id": provider_id,
        "reason": reason,
        "at": at,
    }
