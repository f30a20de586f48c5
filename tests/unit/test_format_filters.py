"""The ``date`` and ``money`` filters: the text Babel gives, whether or not a result is kept.

Results are kept per value, format, zone and locale (``streams/rendering/environment.py``); these
tests compare every filter output with Babel called directly, a second time from the cache, and
check that only small inputs are kept.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency

from streams.rendering import environment
from streams.rendering.environment import build_environment
from streams.settings import REPO_ROOT

ENV = build_environment(REPO_ROOT / "templates")
MOMENT = dt.datetime(2027, 3, 28, 0, 30, tzinfo=dt.timezone.utc)  # 01:30 CET, the night clocks go forward


def _render(source: str, **context: Any) -> str:
    return ENV.from_string(source).render({"locale": "en", "format_locale": None, "time_zone": "UTC", **context})


@pytest.mark.parametrize("locale", ["de", "en_GB", "en_US", "nl", "fr_CH"])
@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "UTC"])
def test_dates_are_the_text_babel_gives_every_time(locale: str, zone: str) -> None:
    context = {"locale": locale.split("_")[0], "format_locale": locale.replace("_", "-"), "time_zone": zone}
    day = MOMENT.date()
    for _ in range(2):  # the second time from the cache
        assert _render("{{ d|date }}", d=day, **context) == format_date(day, format="long", locale=locale)
        assert _render("{{ d|date('short') }}", d=day, **context) == format_date(day, format="short", locale=locale)
        assert _render("{{ t|date }}", t=MOMENT, **context) == format_datetime(
            MOMENT.astimezone(ZoneInfo(zone)), format="long", locale=locale
        )


@pytest.mark.parametrize("locale", ["de", "en_GB", "en_US", "nl", "ja"])
@pytest.mark.parametrize(("minor", "currency"), [(8900, "EUR"), (123456, "GBP"), (1500, "JPY"), (-5, "USD"), (0, "CHF")])
def test_money_is_the_text_babel_gives_every_time(locale: str, minor: int, currency: str) -> None:
    precision = {"JPY": 0}.get(currency, 2)
    expected = format_currency(Decimal(minor).scaleb(-precision), currency, locale=locale)
    for _ in range(2):
        assert _render("{{ m|money }}", m={"amount_minor": minor, "currency": currency}, locale=locale[:2],
                       format_locale=locale.replace("_", "-")) == expected


def test_a_day_and_a_moment_of_that_day_are_kept_apart() -> None:
    midnight = dt.datetime(2027, 3, 28, tzinfo=dt.timezone.utc)
    assert _render("{{ d|date }}", d=midnight.date()) == format_date(midnight.date(), format="long", locale="en")
    assert _render("{{ d|date }}", d=midnight) == format_datetime(midnight, format="long", locale="en")
    assert _render("{{ d|date }}", d=midnight.date()) == "March 28, 2027"


def test_only_small_inputs_are_kept() -> None:
    kept = environment._cached_money.cache_info().currsize
    odd = "X" * 200  # not a currency; Babel prints the code as given
    assert _render("{{ m|money }}", m={"amount_minor": 100, "currency": odd}) == format_currency(Decimal("1.00"), odd, locale="en")
    assert _render("{{ m|money }}", m={"amount_minor": 10**25, "currency": "EUR"}) == format_currency(
        Decimal(10**25).scaleb(-2), "EUR", locale="en"
    )
    assert _render("{{ m|money }}", m={"amount_minor": "250", "currency": "EUR"}) == format_currency(Decimal("2.50"), "EUR", locale="en")
    assert environment._cached_money.cache_info().currsize == kept
    dates = environment._cached_date.cache_info().currsize
    pattern = "d " * 40
    assert _render("{{ d|date(p) }}", d=MOMENT.date(), p=pattern) == format_date(MOMENT.date(), format=pattern, locale="en")
    assert environment._cached_date.cache_info().currsize == dates


def test_a_template_that_sets_its_locale_to_anything_still_formats() -> None:
    assert _render("{% set format_locale = [1] %}{{ m|money }}", m={"amount_minor": 100, "currency": "EUR"}) == "€1.00"
    assert _render("{% set locale = 'x' * 100 %}{{ m|money }}", m={"amount_minor": 100, "currency": "EUR"}) == "€1.00"
