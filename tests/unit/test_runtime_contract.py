"""The runtime's contract with faust-streaming and aiokafka (``streams/runtime/contract.py``)."""

from __future__ import annotations

import json

from faust.types.tuples import Message

from streams.runtime import contract
from streams.runtime.guard import hold


def test_the_installed_libraries_are_the_ones_the_runtime_was_written_against() -> None:
    recorded = json.loads(contract.FINGERPRINTS.read_text(encoding="utf-8"))
    assert recorded["versions"] == contract.PINNED
    assert contract.differences(recorded, contract.current()) == []


def test_a_changed_method_is_named_with_what_depends_on_it() -> None:
    recorded = json.loads(contract.FINGERPRINTS.read_text(encoding="utf-8"))
    key = "faust.streams:Stream._py_aiter"
    recorded["methods"][key]["source_sha256"] = "0" * 64
    recorded["versions"]["aiokafka"] = "0.0.1"
    changed = contract.differences(recorded, contract.current())
    assert any(line.startswith("aiokafka is ") for line in changed)
    assert any(line.startswith(key) and "acks a record in its finally" in line for line in changed)


class _Consumer:
    """Message.ack only decides; the stream tells the consumer (``on_message_out``) when it says True."""


def _message() -> Message:
    return Message("t", 0, 5, 0.0, 0, [], b"k", b"v", None)


def test_faust_acks_a_record_whose_refcount_drops_to_zero() -> None:
    consumer, message = _Consumer(), _message()
    message.incref()  # the stream's own reference
    assert message.ack(consumer) and message.acked  # True: the stream reports it to the consumer


def test_a_held_record_is_not_acked_by_the_streams_finally() -> None:
    consumer, message = _Consumer(), _message()
    message.incref()  # the stream's own reference
    hold(message)  # the guard's, when the record has no outcome
    assert not message.ack(consumer)  # Stream._py_aiter's finally: nothing to report
    assert not message.acked
