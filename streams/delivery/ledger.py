"""The delivery ledger's entries: what the sender knows about each message id.

The ledger is a Faust table keyed by message id, co-partitioned with the outbound topics, so the
worker that owns an outbound partition owns the ledger rows of its ids. Entries are plain dicts
(JSON in the changelog) and are replaced, never edited in place. What the sender does with them
is decided in ``streams/delivery/policy.py``.

Every entry names the worker process that wrote it (``run``). An entry from an earlier run may
stem from a transaction that a crash aborted: the local store kept it, the changelog and the
delivery-status topic did not. The sender then reports that outcome again (see the agent).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

SENDING = "sending"  # a request to the provider may be under way
RETRYING = "retrying"  # the provider answered "not now" (throttled, unavailable, sending blocked)
SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"  # not sent: the recipient is on the tenant's suppression list

RUN = uuid.uuid4().hex[:12]  # this worker process

# Set by ``tidings-redrive`` on the outbound records it republishes (the value is its run id): a
# FAILED id may then be sent again (``streams/delivery/policy.py``); a SENT id never.
REDRIVE_HEADER = "tidings-redrive"


def _entry(state: str, at: dt.datetime, **fields: Any) -> dict[str, Any]:
    return {"state": state, **fields, "at": at.isoformat(), "run": RUN}


def sending_entry(attempt: int, at: dt.datetime) -> dict[str, Any]:
    """Written before each request that may reach the provider; replaced by the outcome."""
    return _entry(SENDING, at, attempt=attempt)


def retrying_entry(attempt: int, reason: str, at: dt.datetime) -> dict[str, Any]:
    """The last request surely did not send the mail; another will follow."""
    return _entry(RETRYING, at, attempt=attempt, reason=reason)


def sent_entry(provider_id: str, at: dt.datetime) -> dict[str, Any]:
    return _entry(SENT, at, provider_id=provider_id)


def failed_entry(reason: str, at: dt.datetime) -> dict[str, Any]:
    return _entry(FAILED, at, reason=reason)


def from_earlier_run(entry: dict[str, Any]) -> bool:
    """Written by another worker process (before a restart, or before a rebalance moved the id here)."""
    return entry.get("run") != RUN


def carries_redrive(headers: Mapping[str, bytes | None] | Iterable[tuple[str, bytes | None]] | None) -> bool:
    """Whether a record's headers (Faust's dict or Kafka's list of pairs) mark it as re-driven."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return any(name == REDRIVE_HEADER and bool(value) for name, value in pairs)


def suppressed_entry(reason: str, at: dt.datetime) -> dict[str, Any]:
    """Final like the others: lifting the suppression later does not send this mail after all."""
    return _entry(SUPPRESSED, at, reason=reason)
