"""What the sender does with an outbound record, given what the ledger holds for its message id.

Ledger states (``streams/delivery/ledger.py``): none (never tried), ``sending`` (a request may be
under way), and the final ``sent`` / ``failed`` / ``suppressed``.

Final states end it: a duplicate record (a replay, a rebalance, a reprocessed batch) is skipped
and counted. One exception: a ``failed`` mail may go again when an operator re-drives it
(``tidings-redrive``) after fixing the cause; ``sent`` never goes twice, re-drive or not.

The unknown outcome. SES has no idempotency key: a request whose answer never came may or may not
have sent the mail. The sender writes ``sending`` into the ledger before each request and the
outcome after it, so a record that arrives to find ``sending`` is a mail whose earlier attempt
ended without an answer being recorded: the worker died between the request and the commit of its
outcome (SIGKILL, out of memory, lost host). A graceful stop never leaves one behind: Faust waits
for the records in flight before its last commit. A read timeout or a dropped connection is the
same question asked while running (``OutcomeUnknown`` from the sender).

How many mails that can be. A request takes a permit before it starts and gives it back only when
the commit carrying its outcome is done (``streams/runtime/commits.py``), so at any moment at most
``TIDINGS_SENDER_MAX_UNCOMMITTED`` mails may have reached SES without a committed outcome; after a
crash these, and only these, can find ``sending`` (or nothing, when even the mark was not
committed and the worker starts on another disk) and go again. A restart on the same disk also
keeps what the local RocksDB store held, which only narrows it.

Policy (``TIDINGS_UNKNOWN_OUTCOME``), never silent: each case is logged with its message id,
counted in ``tidings_delivery_unknown_outcomes_total{cause}``, and then

- ``resend`` (default): sent again. The recipient may get the mail twice, never zero times; the
  copies share one ``Message-ID``, which many mail clients show as one message.
- ``dead_letter``: recorded ``failed`` with reason ``outcome_unknown`` and dead-lettered, for an
  operator to check (SES sending statistics, the tenant's event destination) and re-drive.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from streams.delivery.ledger import FAILED, SENDING

UnknownOutcomePolicy = Literal["resend", "dead_letter"]
FINAL_STATES = frozenset({"sent", "failed", "suppressed"})


class Action(enum.Enum):
    SEND = "send"
    SKIP_DUPLICATE = "skip_duplicate"
    RESEND_UNKNOWN = "resend_unknown"
    DEAD_LETTER_UNKNOWN = "dead_letter_unknown"


def decide(entry: dict[str, Any] | None, *, redrive: bool, policy: UnknownOutcomePolicy) -> Action:
    """The sender's next step for one record whose ledger entry is ``entry``."""
    state = entry.get("state") if entry else None
    if state == FAILED and redrive:
        return Action.SEND
    if state in FINAL_STATES:
        return Action.SKIP_DUPLICATE
    if state == SENDING:
        return Action.RESEND_UNKNOWN if policy == "resend" else Action.DEAD_LETTER_UNKNOWN
    return Action.SEND


def unknown_after_timeout(policy: UnknownOutcomePolicy) -> Action:
    """The sender's next step when SES did not answer a request (read timeout, dropped connection)."""
    return Action.RESEND_UNKNOWN if policy == "resend" else Action.DEAD_LETTER_UNKNOWN


def attempts(entry: dict[str, Any] | None) -> int:
    """Requests made for this id so far, as far as the ledger knows."""
    return int(entry.get("attempt", 0)) if entry else 0
