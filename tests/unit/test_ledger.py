"""Reading the re-drive mark; the send rule itself is tested in test_delivery_policy.py."""

from __future__ import annotations

from streams.delivery.ledger import REDRIVE_HEADER, carries_redrive


def test_the_re_drive_header_is_read_from_faust_dicts_and_kafka_pairs() -> None:
    assert carries_redrive({REDRIVE_HEADER: b"run-1"})
    assert carries_redrive([("other", b"x"), (REDRIVE_HEADER, b"run-1")])
    assert not carries_redrive({})
    assert not carries_redrive(None)
    assert not carries_redrive([("tidings-redrive-from", b"dl/0/1")])
    assert not carries_redrive({REDRIVE_HEADER: b""})  # an empty marker names no run: not a re-drive
    assert not carries_redrive({REDRIVE_HEADER: None})
