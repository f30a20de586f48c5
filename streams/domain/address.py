"""Email addresses: the form a mail is sent to, and the identity addresses are compared by.

Two forms, one rule each, used everywhere an address is taken in:

- **Sendable** (``sendable``): what goes into a mail's From, To and Reply-To and to SES. The
  address must be valid (email-validator, no DNS lookup) and its local part ASCII: SES does not
  accept internationalised local parts (SMTPUTF8), so ``jürgen@example.org`` is refused
  (``invalid_recipient`` for a recipient, a tenant problem for a sender). The domain is written in
  its ASCII (IDNA, punycode) form — ``jana@bücher.example`` is sent as
  ``jana@xn--bcher-kva.example`` — and the local part as written.
- **Identity** (``identity``): the sendable form lower-cased. Two addresses are the same address
  when their identities are equal: ``Jana.Mueller@Example.org``, ``jana.mueller@example.org`` and
  an IDN domain in Unicode or punycode form all name one mailbox. RFC 5321 lets a server treat
  local parts case-sensitively, but no large mailbox provider does, and treating them as one is the
  safe side for suppression (a bounce or an unsubscribe for one spelling stops all spellings).
  Suppression keys, the suppression lookup, the unsubscribe endpoint and message ids
  (``streams/domain/identity.py``) all use the identity.
"""

from __future__ import annotations

import functools

from email_validator import EmailNotValidError, validate_email


class AddressError(ValueError):
    """Not an address a mail can be sent to; the message says why."""


def sendable(address: str) -> str:
    """``local@ascii-domain``, or ``AddressError``."""
    if not isinstance(address, str):
        raise AddressError(f"{type(address).__name__} is not an email address")
    return _sendable(address)


# A mail's addresses are validated where it is rendered, again by the sender's suppression lookup
# and once more in its MIME headers, and a tenant's From address in every mail: email-validator
# took 5 % of the sender's CPU (py-spy, 350 mails/s). Only valid addresses are kept (an error is
# not cached), so the cache holds at most this many short strings whatever the input.
@functools.lru_cache(maxsize=16384)
def _sendable(address: str) -> str:
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as e:
        raise AddressError(str(e)) from None
    return f"{valid.local_part}@{valid.ascii_domain}"


def identity(address: str) -> str:
    """The address as compared and keyed everywhere, or ``AddressError``."""
    return sendable(address).lower()


def identity_or_none(address: object) -> str | None:
    try:
        return identity(address)  # type: ignore[arg-type]  # any object on purpose: a non-str fails validation (AddressError)
    except AddressError:
        return None
