"""What feedback means for the suppression list: SES events and Unsubscribed events in, suppressions out. Pure.

SES events are the JSON SES writes to an event destination of a configuration set (event
publishing; through SNS the same JSON arrives wrapped in a notification whose ``Message`` holds it,
which is unwrapped). Fields read: ``eventType``, ``mail.tags.tenant`` (the sender tags every mail
with its tenant, ``streams/rendering/render.py`` ``ses_tags``), ``bounce.bounceType`` and
``bounce.bouncedRecipients[].emailAddress``, ``complaint.complainedRecipients[].emailAddress`` and
``complaint.complaintFeedbackType``, and their ``timestamp``.

- A ``Permanent`` bounce suppresses each bounced recipient for every mail of the tenant; a
  ``Transient`` or ``Undetermined`` one suppresses nothing (the mailbox may recover).
- A complaint suppresses each complaining recipient for every mail, unless its feedback type is
  ``not-spam`` (the recipient took the mail *out* of the spam folder).
- Every other event type (Delivery, Send, Open ...) is ignored and counted.

Anything unusable raises ``RejectedInput`` with a reason code for the dead-letter topic. Details
name fields, never the addresses or diagnostics a record holds.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.errors import InvalidEvent, InvalidRecipient, RejectedInput, UnknownTenant
from streams.suppression.model import MAX_DETAIL_CHARS, Reason, Suppression, normalize_address, scope_for

# SES's event types (its documentation's list); anything else is counted as "unknown".
SES_EVENT_TYPES = frozenset({
    "Bounce", "Complaint", "Delivery", "Send", "Reject", "Open", "Click", "Rendering Failure",
    "DeliveryDelay", "Subscription",
})
UNSUBSCRIBE_EVENT = "tidings.feedback.Unsubscribed"
TENANT_TAG = "tenant"
# A bounce notice lists the recipients of one mail; more than this is no SES event.
MAX_RECIPIENTS = 100

TenantKnown = Callable[[str], bool]


@dataclass(frozen=True)
class Feedback:
    """What one feedback record asks for."""

    event_type: str  # metric label: an SES event type, "unknown", or the Unsubscribed type
    suppressions: list[Suppression] = field(default_factory=list)
    ignored: str = ""  # why nothing is suppressed ("transient bounce", "Delivery event"), for the log
    invalid_recipients: int = 0  # listed addresses that are no email address (the rest still apply)


def ses_feedback(value: bytes | None, tenant_known: TenantKnown, now: dt.datetime) -> Feedback:
    """The suppressions one SES event record asks for."""
    if not value:
        raise RejectedInput("empty value", reason="empty")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RejectedInput("the value is not JSON (expected an SES event-publishing record)", reason="not_json") from None
    data = _unwrap_sns(data)
    if not isinstance(data, dict) or not isinstance(data.get("eventType", data.get("notificationType")), str):
        raise RejectedInput("not an SES event: no eventType", reason="not_ses_event")
    raw_type = data.get("eventType", data.get("notificationType"))
    event_type = raw_type if raw_type in SES_EVENT_TYPES else "unknown"
    if event_type not in ("Bounce", "Complaint"):
        return Feedback(event_type, ignored=f"{event_type} event")
    tenant_id = _tenant(data)
    if not tenant_known(tenant_id):
        raise UnknownTenant(f"tenant {tenant_id[:64]!r} (mail.tags.{TENANT_TAG}) is not configured")
    if event_type == "Bounce":
        bounce = _object(data, "bounce")
        bounce_type = bounce.get("bounceType")
        if bounce_type != "Permanent":
            return Feedback(event_type, ignored=f"{str(bounce_type)[:20]} bounce")
        detail = f"{bounce_type} bounce ({str(bounce.get('bounceSubType') or '-')[:40]})"
        return _suppressions(event_type, "bounce", tenant_id, bounce, "bouncedRecipients", detail, now)
    complaint = _object(data, "complaint")
    feedback_type = complaint.get("complaintFeedbackType")
    if feedback_type == "not-spam":
        return Feedback(event_type, ignored="not-spam complaint")
    detail = f"complaint ({str(feedback_type or 'no feedback type')[:40]})"
    return _suppressions(event_type, "complaint", tenant_id, complaint, "complainedRecipients", detail, now)


def unsubscribe_feedback(record: dict[str, Any], tenant_known: TenantKnown) -> Feedback:
    """The suppression a decoded ``tidings.feedback.Unsubscribed`` asks for."""
    envelope = record.get("envelope") or {}
    tenant_id = str(envelope.get("tenant_id") or "")
    if not tenant_id:
        raise InvalidEvent("envelope.tenant_id is empty", reason="missing_field")
    if not tenant_known(tenant_id):
        raise UnknownTenant(f"tenant {tenant_id[:64]!r} is not configured")
    address = normalize_address(str(record.get("email") or ""))
    if address is None:
        raise InvalidRecipient("email is not an email address")
    at = envelope.get("occurred_at")
    source = str(record.get("source") or "unknown")
    return Feedback(UNSUBSCRIBE_EVENT, [Suppression(
        tenant_id, address, "unsubscribe", scope_for("unsubscribe"), at if isinstance(at, dt.datetime) else dt.datetime.now(dt.timezone.utc),
        f"unsubscribed ({source[:60]})",
    )])


def _unwrap_sns(data: Any) -> Any:
    """An SNS notification carries the SES record as a JSON string in ``Message``."""
    if isinstance(data, dict) and data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        try:
            return json.loads(data["Message"])
        except json.JSONDecodeError:
            raise RejectedInput("an SNS notification whose Message is not JSON", reason="not_json") from None
    return data


def _tenant(data: dict[str, Any]) -> str:
    mail = data.get("mail")
    tags = mail.get("tags") if isinstance(mail, dict) else None
    values = tags.get(TENANT_TAG) if isinstance(tags, dict) else None
    tenant_id = values[0] if isinstance(values, list) and values and isinstance(values[0], str) else None
    if not tenant_id:
        raise InvalidEvent(
            f"mail.tags.{TENANT_TAG} is missing: publish SES events through a configuration set (event publishing "
            "keeps message tags), from mails Tidings sent",
            reason="missing_field",
        )
    return tenant_id


def _object(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise InvalidEvent(f"{data.get('eventType')} event without a {name} object", reason="missing_field")
    return value


def _suppressions(
    event_type: str, reason: Reason, tenant_id: str, body: dict[str, Any], list_field: str, detail: str, now: dt.datetime
) -> Feedback:
    recipients = body.get(list_field)
    if not isinstance(recipients, list) or not recipients or len(recipients) > MAX_RECIPIENTS:
        raise InvalidEvent(f"{list_field} is missing, empty or longer than {MAX_RECIPIENTS}", reason="missing_field")
    at = _timestamp(body.get("timestamp")) or now
    found: dict[str, Suppression] = {}
    invalid = 0
    for recipient in recipients:
        raw = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        address = normalize_address(raw) if isinstance(raw, str) else None
        if address is None:
            invalid += 1
            continue
        found[address] = Suppression(tenant_id, address, reason, scope_for(reason), at, detail[:MAX_DETAIL_CHARS])
    return Feedback(event_type, list(found.values()), invalid_recipients=invalid)


def _timestamp(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)
