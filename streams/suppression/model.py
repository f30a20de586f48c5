"""The suppression list and its records on ``<prefix>suppressions``. Pure: no Kafka here.

A record is keyed ``<tenant_id>/<address>`` (UTF-8; a tenant id never holds ``/``) with the
address in its identity form (``streams/domain/address.py``: lower-cased, the domain in ASCII),
so a bounce for ``Jana.Mueller@`` suppresses ``jana.mueller@`` and a mail's ``to_address`` in any
spelling finds its entry. Records written before that rule (keyed by the address as written, the
domain in Unicode) are still read, and held under the identity. The
value is JSON: tenant, address, reason (``bounce``, ``complaint``, ``unsubscribe``, ``manual``),
scope (``all``, or ``non_transactional`` for an unsubscribe: receipts and password resets still
go out), when, and a short detail. A tombstone (null value) lifts the suppression.

One record per key means a later record replaces an earlier one. Writers therefore never
narrow a scope (``merge``): an unsubscribe that arrives after a bounce keeps the bounce.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal

from email_validator import EmailNotValidError, validate_email

from streams.domain.address import identity_or_none

Reason = Literal["bounce", "complaint", "unsubscribe", "manual"]
Scope = Literal["all", "non_transactional"]
Outcome = Literal["applied", "removed", "rejected"]
REASONS: tuple[str, ...] = ("bounce", "complaint", "unsubscribe", "manual")
SCOPES: tuple[str, ...] = ("all", "non_transactional")
# Bounds what a hostile record can put into a log line or a detail.
MAX_DETAIL_CHARS = 200
_MAX_KEY_IN_DETAIL = 80


def normalize_address(address: str) -> str | None:
    """The address as suppression keys hold it (its identity), or None if it is no address a mail goes to."""
    return identity_or_none(address)


def _legacy_form(address: str) -> str | None:
    """How keys were written before the identity rule: email-validator's normalised form."""
    try:
        return validate_email(address, check_deliverability=False).normalized
    except (EmailNotValidError, TypeError):
        return None


@dataclass(frozen=True)
class Suppression:
    """Why one tenant must not mail one address, and which of its mails that covers."""

    tenant_id: str
    address: str
    reason: Reason
    scope: Scope
    at: dt.datetime
    detail: str = ""

    @property
    def key(self) -> bytes:
        return record_key(self.tenant_id, self.address)

    def covers(self, transactional: bool) -> bool:
        return self.scope == "all" or not transactional

    def encode(self) -> tuple[bytes, bytes]:
        """The key and value of the record that publishes this suppression."""
        value = {**asdict(self), "at": self.at.isoformat()}
        return self.key, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def record_key(tenant_id: str, address: str) -> bytes:
    return f"{tenant_id}/{address}".encode()


def scope_for(reason: Reason) -> Scope:
    """An unsubscribe stops what the recipient may opt out of; a bounce or complaint stops everything."""
    return "non_transactional" if reason == "unsubscribe" else "all"


def merge(existing: Suppression | None, new: Suppression) -> Suppression | None:
    """What to write for ``new`` given the entry already held: None when writing would narrow it."""
    if existing is not None and existing.scope == "all" and new.scope != "all":
        return None
    return new


def decode(key: bytes | None, value: bytes) -> Suppression:
    """A record's suppression; ``ValueError`` saying what is wrong otherwise."""
    if not key:
        raise ValueError("record without a key (the key is <tenant_id>/<address>)")
    try:
        text_key = key.decode("utf-8")
        data = json.loads(value)
    except UnicodeDecodeError:
        raise ValueError("the key or value is not UTF-8 text") from None
    except json.JSONDecodeError:
        raise ValueError("the value is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the value is not a JSON object")
    values = {name: data.get(name) for name in ("tenant_id", "address", "reason", "scope", "at")}
    missing = [name for name, v in values.items() if not isinstance(v, str) or not v]
    if missing:
        raise ValueError(f"missing or not text: {', '.join(missing)}")
    fields = {name: v for name, v in values.items() if isinstance(v, str)}
    if fields["reason"] not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}")
    if fields["scope"] not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    address = normalize_address(fields["address"])
    if address is None:
        raise ValueError("address is not an email address")
    if record_key(fields["tenant_id"], address) != key and record_key(fields["tenant_id"], _legacy_form(fields["address"]) or "") != key:
        raise ValueError(f"the value's tenant and address do not match the record key {text_key[:_MAX_KEY_IN_DETAIL]!r}")
    try:
        at = dt.datetime.fromisoformat(fields["at"])
    except ValueError:
        raise ValueError("at is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise ValueError("at has no time zone")
    detail = data.get("detail") or ""
    return Suppression(
        tenant_id=fields["tenant_id"], address=address, reason=fields["reason"], scope=fields["scope"],  # type: ignore[arg-type]  # checked in REASONS/SCOPES above
        at=at, detail=str(detail)[:MAX_DETAIL_CHARS],
    )


def split_key(key: bytes) -> tuple[str, str] | None:
    """``(tenant_id, address)`` of a record key, or None when it is not one."""
    try:
        tenant_id, sep, address = key.decode("utf-8").partition("/")
    except UnicodeDecodeError:
        return None
    return (tenant_id, address) if sep and tenant_id and address else None


@dataclass(frozen=True)
class Update:
    """What one record did to the list."""

    outcome: Outcome
    # The suppression's reason when applied, why not when rejected ("invalid", "check_failed"),
    # "none" when removed: a fixed set of metric labels.
    reason: str
    detail: str = ""


class SuppressionList:
    """Every suppression of every tenant, by ``(tenant_id, address)``; updatable while the sender reads.

    The suppression feed (one thread) applies records; the sender calls ``lookup``. Unlike the
    tenant directory this one is updated in place: it may hold hundreds of thousands of entries, and
    a copy per record would make reading the topic at start-up quadratic. Each entry is frozen and
    a single dict assignment or deletion is atomic in CPython, so a reader without a lock sees an
    entry either before or after a change, never half of one.
    """

    def __init__(self, entries: list[Suppression] | None = None) -> None:
        self._entries: dict[tuple[str, str], Suppression] = {(s.tenant_id, s.address): s for s in entries or ()}
        self._write = threading.Lock()

    def lookup(self, tenant_id: str, address: str, transactional: bool) -> Suppression | None:
        """The suppression that stops a mail of ``tenant_id`` to ``address``, or None if it may go out."""
        entry = self._entries.get((tenant_id, address))
        if entry is None:
            normalized = normalize_address(address)
            entry = self._entries.get((tenant_id, normalized)) if normalized and normalized != address else None
        return entry if entry is not None and entry.covers(transactional) else None

    def get(self, tenant_id: str, address: str) -> Suppression | None:
        return self._entries.get((tenant_id, address))

    def apply_record(self, key: bytes | None, value: bytes | None) -> Update:
        """Apply one record of the suppressions topic; a record that cannot be used changes nothing."""
        if value is None:
            parts = split_key(key) if key else None
            if parts is None:
                return Update("rejected", "invalid", "tombstone without a <tenant_id>/<address> key")
            tenant_id, address = parts
            address = normalize_address(address) or address
            with self._write:
                self._entries.pop((tenant_id, address), None)
            return Update("removed", "none")
        try:
            entry = decode(key, value)
        except ValueError as e:
            return Update("rejected", "invalid", str(e)[:MAX_DETAIL_CHARS])
        except RecursionError:
            return Update("rejected", "invalid", "the value is nested too deeply")
        except Exception as e:  # noqa: BLE001 - no record may stop the feed that applies them
            return Update("rejected", "check_failed", f"could not be decoded: {type(e).__name__}")
        with self._write:
            self._entries[(entry.tenant_id, entry.address)] = entry
        return Update("applied", entry.reason)

    def __iter__(self) -> Iterator[Suppression]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
