"""Deterministic message identity (DESIGN invariant 1).

``message_id = H(tenant, trigger, entity, occurrence, recipient)``: the same mail computed again
after a replay, restart or rebalance has the same id, and the sender's ledger sends an id once.
Parts are length-prefixed before hashing so that ("ab", "c") and ("a", "bc") never collide.
"""

from __future__ import annotations

import hashlib

MESSAGE_ID_HEX_CHARS = 32  # 128 bits: collisions are not a practical concern at any mail volume


def message_id(*, tenant_id: str, trigger: str, entity_id: str, occurrence: str, recipient: str) -> str:
    digest = hashlib.sha256()
    for part in (tenant_id, trigger, entity_id, occurrence, recipient.strip().lower()):
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
    return digest.hexdigest()[:MESSAGE_ID_HEX_CHARS]
