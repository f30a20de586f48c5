"""Hostile tenant content shared by the unit, integration and benchmark tests of issue 14.

``poisoned_records`` are tenants-topic values that once stopped the tenant feed (their check
raised) or made the checker allocate what the tenant asked; ``override`` puts a template into
every part of one mail of a tenant, so the tenant is otherwise valid and the template alone is the
attack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streams.domain.tenants import load_tenant
from streams.settings import REPO_ROOT

EXAMPLE = REPO_ROOT / "deploy" / "tenants" / "boxit-london.yaml"
MAIL = "storage/booking.created"  # an event trigger boxit-london has on
PARTS = ("subject.txt", "body.html", "body.txt")

# Templates whose check once raised or allocated without bound (issue 14). The nested ones cannot
# compile and are refused; the others compile (nothing is evaluated at compile time any more) and
# fail at render time, over budget.
UNCOMPILABLE = ("nested_loops", "nested_parentheses")
CHECK_KILLERS = {
    "huge_power": "{{ 10 ** 5000 }}",
    "folded_allocation": "{{ ('x' * 3000000000)|length }}",
    "nested_loops": "".join(f"{{% for i{n} in range(2) %}}" for n in range(21)) + "x" + "{% endfor %}" * 21,
    "nested_parentheses": "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}",
}


def tenant_data(path: Path = EXAMPLE) -> dict[str, Any]:
    return load_tenant(path).model_dump(mode="json")


def override(data: dict[str, Any], source: str, *, mail: str = MAIL) -> dict[str, Any]:
    """``data`` with ``source`` as every part of ``mail`` in every language it offers."""
    templates = {f"{mail}/{lang}/{part}": source for lang in data["languages"] for part in PARTS}
    return {**data, "templates": {**data.get("templates", {}), **templates}}


def poisoned_records(data: dict[str, Any] | None = None) -> dict[str, bytes]:
    """Record values for ``data``'s tenant id, each of which once killed the feed or the checker."""
    data = data if data is not None else tenant_data()
    out = {name: json.dumps(override(data, source)).encode() for name, source in CHECK_KILLERS.items()}
    out["nested_json"] = b'{"tenant_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    out["absurd_param"] = json.dumps(
        {**data, "triggers": {**data.get("triggers", {}), "storage/booking.before_move_out": {"params": {"days": 10_000_000}}}}
    ).encode()
    out["unsendable_sender"] = json.dumps({**data, "sender": {**data["sender"], "from_address": "jürgen@example.org"}}).encode()
    return out

# Legal Jinja of legal size whose CSS inlining would cost seconds (rules x elements).
CSS_BOMB = "<style>{{ 'p{color:red}' * 5000 }}</style>{{ ('<p>x</p>' * 20000)|safe }}"
