"""Delivery-status records: one per state change of a mail, for the producing services.

A producing service that wants to know what became of its mails reads ``<prefix>delivery-status``
(key: message id): QUEUED when the mail was rendered onto the outbound topic, then SENT (with the
SES message id) or FAILED (with the dead-letter reason); SUPPRESSED is reserved for the
suppression list. Records are written in the same exactly-once transaction, on the same
partition number, as the work they report, so a status never describes something that was rolled
back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

SCHEMA = "tidings.outbound.DeliveryStatus"
QUEUED, SENT, SUPPRESSED, FAILED = "QUEUED", "SENT", "SUPPRESSED", "FAILED"


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
