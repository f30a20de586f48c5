"""Deterministic message identity (DESIGN invariant 1).

``message_id = H(tenant, trigger, entity, occurrence, recipient)``: the same mail computed again
after a replay, restart or rebalance has the same id, and the sender's ledger sends an id once.
Parts are length-prefixed before hashing so that ("ab", "c") and ("a", "bc") never collide.
The recipient enters as its identity (``streams/domain/address.py``: lower-cased, the domain in
ASCII), so every spelling of one address gives one id; an ASCII address is just lower-cased (the
same thing, without the validator's cost on the tick's hot path).
"""

from __future__ import annotations

import hashlib

from streams.domain.address import identity_or_none

MESSAGE_ID_HEX_CHARS = 32  # 128 bits: collisions are not a practical concern at any mail volume


def message_id(*, tenant_id: str, trigger: str, entity_id: str, occurrence: str, recipient: str) -> str:
    digest = hashlib.sha256()
    for part in (tenant_id, trigger, entity_id, occurrence, recipient_identity(recipient)):
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
    return digest.hexdigest()[:MESSAGE_ID_HEX_CHARS]


def recipient_identity(recipient: str) -> str:
    """The recipient as message ids hash it."""
    plain = recipient.strip()
    if plain.isascii():
        return plain.lower()
    return identity_or_none(plain) or plain.lower()
