"""Inactive customers: a customer of a tenant that no trigger, event or timed, may mail. Pure.

Seed 002 (charging): a customer the operator deletes is never removed; it moves to Inactive
Customers, and from then on gets nothing, until the operator restores it. The producing platform
says so with ``<pack>.CustomerDeactivated`` and ``<pack>.CustomerReactivated`` (any pack may
declare them; charging does), keyed by the customer id, on the pack's compacted ``customers``
topic.

Why a whole-topic view and not entity state. The mails a deactivation must stop come from every
aggregate the customer has: a station issue (keyed by station), an invoice (keyed by invoice),
a connectivity timer (in the stations table). Those records live on their own partitions, while
the customer's status lives on the partition of the customer's key, so a partitioned table row of
the customer cannot be read where the decision is made. A few thousand inactive customers are a
few hundred kilobytes, so every worker holds all of them, read from the compacted topic by
``feed.CustomerStatusFeed`` exactly as the tenants and suppressions are (``streams/compacted.py``).
The topic is compacted so that a customer deactivated years ago still is; the key is the customer
id, which the platform keeps unique across its operators (the state here is keyed by tenant *and*
customer all the same, read from the record, never from the key).

Where it applies: to each *firing* before it is rendered, in the ingest pipeline (event triggers)
and in ``TimedEngine.render_firing`` (timed triggers). A firing whose recipient's id is an inactive
customer of the firing's tenant is not rendered; it becomes a SUPPRESSED delivery status with the
reason ``customer_inactive`` (``streams/domain/status.py``) and counts in
``tidings_mails_suppressed_total{reason="customer_inactive"}``. Timers keep running meanwhile, so a
reactivated customer's reminders resume without waiting for a new event; what was skipped stays
skipped. A mail already rendered before the deactivation was read still goes out.

The view is as fresh as the feed: a deactivation is applied within the feed's lag of its
publication (well under a second on a healthy cluster), not in the transaction of the events that
follow it on other partitions. Same as the suppression list.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

DEACTIVATED = "CustomerDeactivated"
REACTIVATED = "CustomerReactivated"
REASON = "customer_inactive"

Outcome = Literal["deactivated", "reactivated", "ignored"]
F = TypeVar("F")


def is_status_event(type_name: str) -> bool:
    return type_name.rsplit(".", 1)[-1] in (DEACTIVATED, REACTIVATED)


@dataclass(frozen=True)
class Inactive:
    tenant_id: str
    customer_id: str
    since: dt.datetime


class InactiveCustomers:
    """The inactive customers of every tenant; updated by one feed thread, read by the agents.

    Copy on write, like ``TenantDirectory``: a reader sees the old or the new set, never a mix.
    """

    def __init__(self, entries: Iterable[Inactive] = ()) -> None:
        self._entries: dict[tuple[str, str], Inactive] = {(e.tenant_id, e.customer_id): e for e in entries}
        self._write = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def is_inactive(self, tenant_id: str, customer_id: Any) -> bool:
        return isinstance(customer_id, str) and (tenant_id, customer_id) in self._entries

    def apply(self, type_name: str, record: Mapping[str, Any]) -> Outcome:
        """Apply a decoded status event; anything else is ``ignored``."""
        short = type_name.rsplit(".", 1)[-1]
        envelope = record.get("envelope") or {}
        tenant_id, customer_id = envelope.get("tenant_id"), record.get("customer_id")
        if short not in (DEACTIVATED, REACTIVATED) or not tenant_id or not customer_id:
            return "ignored"
        key = (str(tenant_id), str(customer_id))
        with self._write:
            entries = dict(self._entries)
            if short == DEACTIVATED:
                since = envelope.get("occurred_at") or dt.datetime.now(dt.timezone.utc)
                entries.setdefault(key, Inactive(key[0], key[1], since))
            else:
                entries.pop(key, None)
            self._entries = entries
        return "deactivated" if short == DEACTIVATED else "reactivated"

    def partition(self, tenant_id: str, firings: Iterable[F]) -> tuple[list[F], list[F]]:
        """``firings`` split into (to render, skipped: their recipient is an inactive customer of the tenant)."""
        keep: list[F] = []
        skip: list[F] = []
        for firing in firings:
            recipient = getattr(firing, "recipient", None) or {}
            (skip if self.is_inactive(tenant_id, recipient.get("id")) else keep).append(firing)
        return keep, skip
