"""Records of the tenants topic: what a tenant looks like on the wire, and applying one. Pure.

The tenants topic is compacted and keyed by tenant id (UTF-8). A record's value is the tenant as
JSON (``Tenant.model_dump_json()``, the same fields as the YAML file); a null value (tombstone)
removes the tenant. A record that cannot be used (no key, not JSON, not a valid tenant, a key that
names another tenant, a tenant the packs cannot serve) is rejected: the directory keeps the
previous version of that tenant, if any, and the reason says why.

Applying a record never raises, whatever its bytes (deeply nested JSON, a template whose check
fails in an unforeseen way): a record that cannot be applied is rejected with a ``reason`` code
(a metric label) and a detail, and the feed goes on with the next record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from streams.domain.tenants import Tenant, TenantDirectory
from streams.tenants.validate import json_problems, unexpected

Outcome = Literal["applied", "rejected", "removed"]
# Why a record was rejected: a small fixed set, used as a metric label.
Reason = Literal["none", "no_key", "invalid_key", "invalid_tenant", "key_mismatch", "not_servable", "check_failed"]
Check = Callable[[Tenant], Iterable[tuple[str, str]]]
# Bounds what a hostile key can put into a log line.
_MAX_ID_IN_DETAIL = 64
# Bounds a rejection's detail (it is logged, and kept for ``tidings-tenants show``).
_MAX_DETAIL = 2000


@dataclass(frozen=True)
class Update:
    """What one record did to the directory."""

    outcome: Outcome
    tenant_id: str | None
    detail: str = ""
    reason: Reason = "none"


def encode(tenant: Tenant) -> tuple[bytes, bytes]:
    """The key and value of the record that publishes ``tenant``."""
    return tenant.tenant_id.encode(), tenant.model_dump_json().encode()


def apply_record(directory: TenantDirectory, key: bytes | None, value: bytes | None, check: Check | None = None) -> Update:
    """Apply one record to ``directory``; ``check`` adds problems beyond the model (the packs'). Never raises."""
    if not key:
        return Update("rejected", None, "record without a key (the key is the tenant id)", "no_key")
    try:
        tenant_id = key.decode("utf-8")
    except UnicodeDecodeError:
        return Update("rejected", None, "the key is not UTF-8 text", "invalid_key")
    shown = tenant_id[:_MAX_ID_IN_DETAIL]
    if value is None:
        known = directory.remove(tenant_id)
        return Update("removed", tenant_id, "" if known else "was not known")
    try:
        return _apply(directory, tenant_id, shown, value, check)
    except Exception as e:  # noqa: BLE001 - whatever fails, this record is rejected and the feed goes on
        return Update("rejected", shown, unexpected(e), "check_failed")


def _apply(directory: TenantDirectory, tenant_id: str, shown: str, value: bytes, check: Check | None) -> Update:
    tenant, problems = json_problems(value)
    reason: Reason = "invalid_tenant"
    if tenant is not None and tenant.tenant_id != tenant_id:
        problems, reason = [("tenant_id", f"{tenant.tenant_id!r} does not match the record key {shown!r}")], "key_mismatch"
    elif tenant is not None and check is not None:
        try:
            problems, reason = list(check(tenant)), "not_servable"
        except Exception as e:  # noqa: BLE001
            problems, reason = [("<root>", unexpected(e))], "check_failed"
    if tenant is None or problems:
        detail = "; ".join(f"{field}: {message}" for field, message in problems)
        return Update("rejected", shown, detail[:_MAX_DETAIL], reason)
    directory.put(tenant)
    return Update("applied", tenant_id)
