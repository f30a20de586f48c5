from __future__ import annotations

from streams.domain.identity import MESSAGE_ID_HEX_CHARS, message_id

BASE = dict(tenant_id="t1", trigger="storage/booking.created#booking.created", entity_id="BK-1", occurrence="e-1", recipient="a@example.org")


def test_same_inputs_same_id_every_time() -> None:
    assert message_id(**BASE) == message_id(**dict(BASE))
    assert len(message_id(**BASE)) == MESSAGE_ID_HEX_CHARS


def test_every_part_changes_the_id() -> None:
    ids = {message_id(**BASE)}
    for part in BASE:
        ids.add(message_id(**{**BASE, part: BASE[part] + "x"}))
    assert len(ids) == len(BASE) + 1


def test_parts_cannot_bleed_into_each_other() -> None:
    assert message_id(**{**BASE, "tenant_id": "ab", "trigger": "c"}) != message_id(**{**BASE, "tenant_id": "a", "trigger": "bc"})


def test_recipient_case_and_spaces_do_not_make_a_second_mail() -> None:
    assert message_id(**BASE) == message_id(**{**BASE, "recipient": "  A@Example.ORG "})
