"""The delivery ledger's entries: what the sender knows about each message id.

The ledger is a Faust table keyed by message id, co-partitioned with the outbound topic, so the
worker that owns an outbound partition owns the ledger rows of its ids. Entries are plain dicts
(JSON in the changelog) and are replaced, never edited in place.

``may_send`` is the sender's one rule: a new id is sent, a SENT id never again, a FAILED id only
when ``tidings-redrive`` republished its record after a fix (``streams/redrive/``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

SENT = "sent"
FAILED = "failed"


def sent_entry(provider_id: str, at: dt.datetime) -> dict[str, Any]:
    return {"state": SENT, "provider_id": provider_id, "at": at.isoformat()}


def failed_entry(reason: str, at: dt.datetime) -> dict[str, Any]:
    return {"state": FAILED, "reason": reason, "at": at.isoformat()}


def already_done(entry: dict[str, Any] | None) -> bool:
    """An id with a final outcome is never handed to the provider again."""
    return entry is not None and entry.get("state") in (SENT, FAILED)


# Set by ``tidings-redrive`` on the outbound records it republishes (the value is the run id).
REDRIVE_HEADER = "tidings-redrive"


def may_send(entry: dict[str, Any] | None, redrive: bool) -> bool:
    """Whether the sender may hand this id to the provider now.

    A FAILED id is sent again only when an operator re-drives it (the record carries the re-drive
    header); a SENT id never, whatever the header says: a re-drive can add a mail, never double one.
    """
    if entry is not None and entry.get("state") == FAILED:
        return redrive
    return not already_done(entry)


def carries_redrive(headers: Mapping[str, bytes | None] | Iterable[tuple[str, bytes | None]] | None) -> bool:
    """Whether a record's headers (Faust's dict or Kafka's list of pairs) mark it as re-driven."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return any(name == REDRIVE_HEADER and bool(value) for name, value in pairs)
