"""Address rules (streams/domain/address.py) as seen through the validation cache: the same
answers on a second call, errors never remembered as valid, and hostile input bounded."""

from __future__ import annotations

import random

import email_validator
import pytest
from email_validator import EmailNotValidError, validate_email

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


# -- the plain-form shortcut --------------------------------------------------------------------

_PIECES = ["a", "Z", "9", "_", "+", "-", ".", "..", "@", "x" * 63, "y" * 64, "ü", "'", '"', " ", "--", "xn--", "A"]
_TLDS = ["org", "example", "test", "local", "onion", "arpa", "invalid", "localhost", "c0m", "1", "b", "ORG", "co-uk", "x" * 64]


def _generated(rng: random.Random) -> str:
    """Addresses near the plain form's edges: its pieces, the special-use names, lengths at the limits."""
    edgy = rng.random() < 0.3  # else mostly plain characters, so that both sides are reached
    local = "".join(rng.choice(_PIECES) if edgy else rng.choice("aZ9_+-" * 3 + ".") for _ in range(rng.randint(0, 12)))
    if rng.random() < 0.05:
        local = "l" * rng.choice([63, 64, 65])
    labels = ["".join(rng.choice("ab9-" if edgy else "ab9" * 4 + "-") for _ in range(rng.randint(0 if edgy else 1, 6)))
              for _ in range(rng.randint(0, 3))]
    if edgy and rng.random() < 0.2:
        labels.append(rng.choice(["A", "_", "ü", "xn--a", "ab--c"]))
    if rng.random() < 0.05:
        labels.append("d" * rng.choice([62, 63, 64]))
    domain = ".".join([*labels, rng.choice(_TLDS)])
    return f"{local}@{domain}" if rng.random() < 0.97 else f"{local}{domain}"


def _validator(address: str) -> str | None:
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return f"{valid.local_part}@{valid.ascii_domain}"


def test_every_address_the_shortcut_takes_is_one_email_validator_keeps_unchanged() -> None:
    rng = random.Random(20261206)
    taken = refused = 0
    for _ in range(30_000):
        candidate = _generated(rng)
        if address._plain(candidate):
            taken += 1
            assert _validator(candidate) == candidate, candidate
        elif _validator(candidate) is None:
            refused += 1
    # The generator reaches both sides: many plain addresses, and many the validator refuses.
    assert taken > 2_000 and refused > 2_000, (taken, refused)


@pytest.mark.parametrize("outside", [
    "x@a.test", "x@b.a.localhost", "x@ab--c.org", "x@Example.org", "jürgen@example.org", "a..b@x.org", ".a@x.org",
    "a.@x.org", "x@-a.org", "x@a-.org", "x@a.123", "l" * 65 + "@x.org", "x@" + "d" * 64 + ".org", "o'neil@x.org",
])
def test_what_the_shortcut_leaves_to_email_validator(outside: str) -> None:
    assert not address._plain(outside)
    address._sendable.cache_clear()
    expected = _validator(outside)
    if expected is None:
        with pytest.raises(AddressError):
            sendable(outside)
    else:
        assert sendable(outside) == expected


def test_a_special_use_name_added_to_email_validator_is_honoured_by_the_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    assert address._plain("x@shop.internal")
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", [*email_validator.SPECIAL_USE_DOMAIN_NAMES, "internal"])
    assert not address._plain("x@shop.internal")
