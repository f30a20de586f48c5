from __future__ import annotations

import datetime as dt

import pytest

from streams.delivery.ledger import failed_entry, from_earlier_run, retrying_entry, sending_entry, sent_entry
from streams.delivery.policy import Action, attempts, decide, unknown_after_timeout

AT = dt.datetime(2026, 11, 24, 9, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("entry", "redrive", "policy", "action"),
    [
        (None, False, "resend", Action.SEND),
        (retrying_entry(2, "TooManyRequestsException", AT), False, "resend", Action.SEND),
        (sent_entry("ses-1", AT), False, "resend", Action.SKIP_DUPLICATE),
        (sent_entry("ses-1", AT), True, "resend", Action.SKIP_DUPLICATE),  # sent never goes twice
        (failed_entry("rejected_by_provider", AT), False, "resend", Action.SKIP_DUPLICATE),
        (failed_entry("rejected_by_provider", AT), True, "resend", Action.SEND),  # an operator's re-drive
        ({"state": "suppressed", "at": AT.isoformat()}, False, "resend", Action.SKIP_DUPLICATE),
        (sending_entry(1, AT), False, "resend", Action.RESEND_UNKNOWN),
        (sending_entry(1, AT), False, "dead_letter", Action.DEAD_LETTER_UNKNOWN),
    ],
    ids=["new", "retrying", "sent", "sent-redriven", "failed", "failed-redriven", "suppressed",
         "sending-resend", "sending-dead-letter"],
)
def test_the_ledger_entry_decides_what_the_sender_does(entry, redrive, policy, action) -> None:  # type: ignore[no-untyped-def]
    assert decide(entry, redrive=redrive, policy=policy) is action


def test_a_timeout_follows_the_same_policy_as_a_crash() -> None:
    assert unknown_after_timeout("resend") is Action.RESEND_UNKNOWN
    assert unknown_after_timeout("dead_letter") is Action.DEAD_LETTER_UNKNOWN


def test_attempts_carry_over_from_the_entry() -> None:
    assert attempts(None) == 0
    assert attempts(sending_entry(3, AT)) == 3
    assert attempts(retrying_entry(4, "ServiceUnavailable", AT)) == 4


def test_entries_name_the_process_that_wrote_them() -> None:
    assert not from_earlier_run(sent_entry("ses-1", AT))
    assert from_earlier_run({**sent_entry("ses-1", AT), "run": "a-previous-process"})
    assert from_earlier_run({"state": "sent", "provider_id": "ses-1", "at": AT.isoformat()})  # written before runs existed
