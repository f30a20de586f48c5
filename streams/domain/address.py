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
import re

import email_validator
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
    if _plain(address):
        return address
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


# The form nearly every address takes: an ASCII local part of letters, digits and ``_+-`` in
# dot-separated runs, and a lower-case ASCII domain of hostname labels under a TLD that starts
# with a letter. email-validator accepts every such address unchanged (no IDNA, nothing to
# lower-case), yet spends about 30 us finding that out: a fifth of a booking mail's render when
# each recipient is new (the replay's first pass, a worker's first mail to someone). Anything
# else (quotes, IDN, upper-case or ``--`` in the domain, lengths near a limit, special-use names
# such as ``.test``) goes to email-validator as before. tests/unit/test_address.py holds the two
# to the same answers over generated addresses.
_PLAIN = re.compile(
    r"[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]{1,64})*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,8}[a-z][a-z0-9]{0,62}"
)


def _plain(address: str) -> bool:
    """True when ``address`` is of the plain form above and email-validator would keep it as it is."""
    if len(address) > 200 or _PLAIN.fullmatch(address) is None:
        return False
    local, _, domain = address.partition("@")
    if len(local) > 64 or "--" in domain:
        return False
    # Read at each call: the list is email-validator's, and a deployment may change it. A name is
    # special-use here when it is the domain or one of its dot-suffixes (test, example.test): each
    # suffix looked up in the list, rather than a formatted endswith per name.
    names = email_validator.SPECIAL_USE_DOMAIN_NAMES
    at = -1
    while True:
        if domain[at + 1:] in names:
            return False
        at = domain.find(".", at + 1)
        if at < 0:
            return True
