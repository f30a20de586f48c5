"""The ledger's send rule: new ids go, SENT never again, FAILED only when re-driven."""

from __future__ import annotations

import pytest

from streams.delivery.ledger import REDRIVE_HEADER, already_done, carries_redrive, failed_entry, may_send, sent_entry
from tests.unit.conftest import NOW

SENT = sent_entry("ses-1", NOW)
FAILED = failed_entry("ses:MessageRejected", NOW)


@pytest.mark.parametrize("redrive", [False, True])
def test_a_new_id_may_be_sent(redrive: bool) -> None:
    assert may_send(None, redrive=redrive)


@pytest.mark.parametrize("redrive", [False, True])
def test_a_sent_id_is_never_sent_again_whatever_the_header(redrive: bool) -> None:
    assert not may_send(SENT, redrive=redrive)


def test_a_failed_id_is_sent_again_only_when_re_driven() -> None:
    assert not may_send(FAILED, redrive=False)
    assert may_send(FAILED, redrive=True)


def test_the_re_drive_header_is_read_from_faust_dicts_and_kafka_pairs() -> None:
    assert carries_redrive({REDRIVE_HEADER: b"run-1"})
    assert carries_redrive([("other", b"x"), (REDRIVE_HEADER, b"run-1")])
    assert not carries_redrive({})
    assert not carries_redrive(None)
    assert not carries_redrive([("tidings-redrive-from", b"dl/0/1")])
    assert not carries_redrive({REDRIVE_HEADER: b""})  # an empty marker names no run: not a re-drive
    assert not carries_redrive({REDRIVE_HEADER: None})


@pytest.mark.parametrize("entry", [None, SENT, FAILED, {"state": "queued"}], ids=["new", "sent", "failed", "other"])
def test_without_the_header_the_rule_is_the_old_one(entry: dict | None) -> None:  # type: ignore[type-arg]
    assert may_send(entry, redrive=False) is (not already_done(entry))
