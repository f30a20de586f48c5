"""The one-click unsubscribe token: tenant and address, opaque and tamper-proof. Pure.

A List-Unsubscribe URL travels through mail clients, proxies and link scanners, and lands in their
logs, so it must not show whom it unsubscribes, and nobody may forge one for another address.
The token is a Fernet token (the ``cryptography`` package): AES-128-CBC for opacity,
HMAC-SHA256 over it for integrity. Its key is derived from the deployment secret
(``TIDINGS_UNSUBSCRIBE_SECRET``) with HKDF-SHA256, so every worker of a deployment verifies what
any of them signed, and rotating the secret invalidates every link already mailed.

Tokens do not expire: an unsubscribe link must work as long as the mail is in someone's inbox.
"""

from __future__ import annotations

import base64
import json

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Tokens from this version on are tagged so that a later format can tell them apart.
_CONTEXT = b"tidings/unsubscribe-token/v1"
# A real token of a 254-character address is about 500 characters; anything longer is refused
# before any cryptography runs.
MAX_TOKEN_CHARS = 1024
MIN_SECRET_CHARS = 16


class BadToken(ValueError):
    """The token is not one this deployment issued (forged, truncated, altered, or another secret's)."""


class TokenSigner:
    """Issues and verifies unsubscribe tokens with one deployment secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"the unsubscribe secret needs at least {MIN_SECRET_CHARS} characters")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CONTEXT).derive(secret.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def issue(self, tenant_id: str, address: str) -> str:
        payload = json.dumps([tenant_id, address], ensure_ascii=False, separators=(",", ":")).encode()
        # URL-safe base64 already; the padding '=' is dropped (it is not needed to decode).
        return self._fernet.encrypt(payload).decode("ascii").rstrip("=")

    def verify(self, token: str) -> tuple[str, str]:
        """``(tenant_id, address)`` of a token this deployment issued; ``BadToken`` otherwise."""
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise BadToken("no token of this deployment")
        padded = token + "=" * (-len(token) % 4)
        try:
            payload = json.loads(self._fernet.decrypt(padded.encode("ascii")))
        except (InvalidToken, ValueError):
            raise BadToken("no token of this deployment") from None
        if not (isinstance(payload, list) and len(payload) == 2 and all(isinstance(p, str) and p for p in payload)):
            raise BadToken("no token of this deployment")
        return payload[0], payload[1]
