"""Address rules (streams/domain/address.py) as seen through the validation cache: the same
answers on a second call, errors never remembered as valid, and hostile input bounded."""

from __future__ import annotations

import pytest

from streams.domain import address
from streams.domain.address import AddressError, identity, sendable


def test_a_second_call_answers_the_same_from_the_cache() -> None:
    address._sendable.cache_clear()
    first = sendable("Jana.Mueller@Bücher.example")
    assert sendable("Jana.Mueller@Bücher.example") == first == "Jana.Mueller@xn--bcher-kva.example"
    assert address._sendable.cache_info().hits == 1
    assert identity("Jana.Mueller@Bücher.example") == "jana.mueller@xn--bcher-kva.example"


@pytest.mark.parametrize("bad", ["jürgen@example.org", "no-at-sign", "a@b@c.example", "x" * 100_000 + "@example.org", ""])
def test_an_invalid_address_is_refused_every_time_and_not_kept(bad: str) -> None:
    address._sendable.cache_clear()
    for _ in range(2):
        with pytest.raises(AddressError):
            sendable(bad)
    assert address._sendable.cache_info().currsize == 0


def test_a_non_string_is_refused_before_the_cache() -> None:
    with pytest.raises(AddressError, match="int is not an email address"):
        sendable(42)  # type: ignore[arg-type]
