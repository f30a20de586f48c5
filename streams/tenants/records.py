"""Records of the tenants topic: what a tenant looks like on the wire, and applying one. Pure.

The tenants topic is compacted and keyed by tenant id (UTF-8). A record's value is the tenant as
JSON (``Tenant.model_dump_json()``, the same fields as the YAML file); a null value (tombstone)
removes the tenant. A record that cannot be used (no key, not JSON, not a valid tenant, a key that
names another tenant, a tenant the packs cannot serve) is rejected: the directory keeps the
previous version of that tenant, if any, and the reason says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from streams.tenants.model import Tenant, TenantDirectory
from streams.tenants.validate import json_problems

Outcome = Literal["applied", "rejected", "removed"]
Check = Callable[[Tenant], Iterable[tuple[str, str]]]
# Bounds what a hostile key can put into a log line.
_MAX_ID_IN_DETAIL = 64


@dataclass(frozen=True)
class Update:
    """What one record did to the directory."""

    outcome: Outcome
    tenant_id: str | None
    detail: str = ""


def encode(tenant: Tenant) -> tuple[bytes, bytes]:
    """The key and value of the record that publishes ``tenant``."""
    return tenant.tenant_id.encode(), tenant.model_dump_json().encode()


def apply_record(directory: TenantDirectory, key: bytes | None, value: bytes | None, check: Check | None = None) -> Update:
    """Apply one record to ``directory``; ``check`` adds problems beyond the model (the packs')."""
    if not key:
        return Update("rejected", None, "record without a key (the key is the tenant id)")
    try:
        tenant_id = key.decode("utf-8")
    except UnicodeDecodeError:
        return Update("rejected", None, "the key is not UTF-8 text")
    shown = tenant_id[:_MAX_ID_IN_DETAIL]
    if value is None:
        known = directory.remove(tenant_id)
        return Update("removed", tenant_id, "" if known else "was not known")
    tenant, problems = json_problems(value)
    if tenant is not None and tenant.tenant_id != tenant_id:
        problems = [("tenant_id", f"{tenant.tenant_id!r} does not match the record key {shown!r}")]
    elif tenant is not None and check is not None:
        problems = list(check(tenant))
    if tenant is None or problems:
        return Update("rejected", tenant_id, "; ".join(f"{field}: {message}" for field, message in problems))
    directory.put(tenant)
    return Update("applied", tenant_id)
