"""The delivery ledger's entries: what the sender knows about each message id.

The ledger is a Faust table keyed by message id, co-partitioned with the outbound topic, so the
worker that owns an outbound partition owns the ledger rows of its ids. Entries are plain dicts
(JSON in the changelog) and are replaced, never edited in place.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"  # not sent: the recipient is on the tenant's suppression list


def sent_entry(provider_id: str, at: dt.datetime) -> dict[str, Any]:
    return {"state": SENT, "provider_id": provider_id, "at": at.isoformat()}


def failed_entry(reason: str, at: dt.datetime) -> dict[str, Any]:
    return {"state": FAILED, "reason": reason, "at": at.isoformat()}


def suppressed_entry(reason: str, at: dt.datetime) -> dict[str, Any]:
    """Final like the others: lifting the suppression later does not send this mail after all."""
    return {"state": SUPPRESSED, "reason": reason, "at": at.isoformat()}


def already_done(entry: dict[str, Any] | None) -> bool:
    """An id with a final outcome is never handed to the provider again."""
    return entry is not None and entry.get("state") in (SENT, FAILED, SUPPRESSED)
