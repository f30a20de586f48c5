"""The worker leaves what it loaded at start-up out of later garbage collections
(``streams/runtime/app.py`` ``freeze_startup_objects``), and still collects what it makes after."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.runtime.app import freeze_startup_objects


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _in_a_generation(obj: object) -> bool:
    return any(o is obj for generation in (0, 1, 2) for o in gc.get_objects(generation=generation))


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a  # only the cycle collector frees these
    return weakref.ref(a)


def test_start_up_objects_are_frozen_and_later_cycles_still_collected(unfrozen_after: None) -> None:
    garbage_before = _cycle()
    kept = Node()
    assert _in_a_generation(kept)
    freeze_startup_objects()
    assert garbage_before() is None, "garbage made before the freeze is collected first, not frozen"
    assert gc.get_freeze_count() > 0
    assert not _in_a_generation(kept), "what was loaded before is out of every collection"
    later = _cycle()
    gc.collect()
    assert later() is None, "a cycle made after the freeze is still collected"
