"""The Jinja2 environment every template renders in.

Templates are untrusted input (tenants write their own), so they run in Jinja2's immutable
sandbox with render budgets (``streams/rendering/budget.py``: every loop item, call, write and
value counted or measured) and ``StrictUndefined`` (a misspelt merge tag is an error, not an empty
string) and autoescaping for HTML. Compiled templates stay in Jinja2's cache for the life of the
worker (``auto_reload`` off: a deployed template never changes under a running worker).

Filters format values for the mail's locale with Babel; the locale comes from the render context.
Their results are kept per worker (value, format, zone, locale -> text; small inputs only), so a
value formatted in both parts of a mail, or again in the next mail, costs Babel once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, get_currency_precision
from jinja2 import BaseLoader, Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, pass_context, select_autoescape
from jinja2.runtime import Context

from streams.rendering.budget import BudgetedEnvironment
from streams.rendering.locale import babel_locale

TEMPLATE_CACHE_SIZE = 5000  # every trigger x language x part of every pack stays compiled


def warm_locales(tags: Iterable[str]) -> None:
    """Load Babel's data for each locale (dates, zones, currencies) now rather than in a render."""
    moment = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    for tag in sorted(set(tags)):
        name = babel_locale(tag).replace("-", "_")
        format_datetime(moment, format="long", locale=name)
        format_date(moment.date(), format="long", locale=name)
        format_currency(1, "EUR", locale=name)


# Formatting a date or an amount with Babel costs 10-50 us (CLDR lookups, plural rules), and a
# mail formats each value twice (HTML and text part); events repeat amounts and days too. A result
# is a pure function of value, format, time zone and locale, so it is kept. Only small inputs are
# kept (_SMALL_KEY), so a template cannot fill the cache with large keys or results: an entry is
# about 200 bytes, a full cache about a megabyte.
FORMAT_CACHE_SIZE = 4096
_SMALL_KEY = 64  # characters of a format, currency or zone name; bits of an amount
# Distinct (format_locale, locale) pairs a worker meets: languages x regions, a few dozen.
LOCALE_CACHE_SIZE = 256


@lru_cache(maxsize=LOCALE_CACHE_SIZE)
def _locale_name(format_locale: str | None, locale: str | None) -> str:
    return babel_locale(format_locale, locale).replace("-", "_")


def _babel_locale(context: Context) -> str:
    # format_locale is resolved by the renderer; a template that sets it to something else still formats.
    format_locale, locale = context.get("format_locale"), context.get("locale")
    if _small_text(format_locale) and _small_text(locale):
        return _locale_name(format_locale, locale)
    return babel_locale(format_locale, locale).replace("-", "_")


def _small_text(value: object) -> bool:
    return value is None or (type(value) is str and len(value) <= _SMALL_KEY)


@lru_cache(maxsize=LOCALE_CACHE_SIZE)
def _parsed(name: str) -> Locale:
    return Locale.parse(name)


def _format_date(value: dt.date | dt.datetime, format: str, zone: str, locale: str) -> str:  # noqa: A002
    if isinstance(value, dt.datetime):
        return format_datetime(value.astimezone(ZoneInfo(zone)), format=format, locale=_parsed(locale))
    return format_date(value, format=format, locale=_parsed(locale))


def _format_money(amount_minor: Any, currency: str, locale: str) -> str:
    amount = Decimal(amount_minor).scaleb(-get_currency_precision(currency))
    return format_currency(amount, currency, locale=_parsed(locale))


# ``kind`` is part of the key: a date and a datetime never share an entry, nor the two readings
# (fold) of a naive datetime in a repeated hour.
@lru_cache(maxsize=FORMAT_CACHE_SIZE)
def _cached_date(kind: str, value: dt.date, format: str, zone: str, locale: str) -> str:  # noqa: A002
    return _format_date(value, format, zone, locale)


@lru_cache(maxsize=FORMAT_CACHE_SIZE)
def _cached_money(amount_minor: int, currency: str, locale: str) -> str:
    return _format_money(amount_minor, currency, locale)


@pass_context
def _date(context: Context, value: dt.date | dt.datetime, format: str = "long") -> str:
    zone = str(context.get("time_zone", "UTC"))
    if type(value) in (dt.date, dt.datetime) and _small_text(format) and len(zone) <= _SMALL_KEY:
        return _cached_date(f"{type(value).__name__}/{getattr(value, 'fold', 0)}", value, format, zone, _babel_locale(context))
    return _format_date(value, format, zone, _babel_locale(context))


@pass_context
def _money(context: Context, value: dict[str, Any]) -> str:
    amount_minor, currency = value["amount_minor"], value["currency"]
    if type(amount_minor) is int and amount_minor.bit_length() <= _SMALL_KEY and _small_text(currency):
        return _cached_money(amount_minor, currency, _babel_locale(context))
    return _format_money(amount_minor, currency, _babel_locale(context))


OVERRIDE_PREFIX = "@tenant/"


class OverrideLoader(BaseLoader):
    """The repository's template files, plus tenants' own templates registered by content.

    An override is registered under ``@tenant/<tenant>/<sha256 of source>/<pack>/...``: a changed
    override gets a new name, so Jinja2's compiled-template cache can never serve a stale one, and
    ``{% extends "_layouts/base.html" %}`` inside an override still finds the brand layout.
    """

    def __init__(self, templates_dir: Path) -> None:
        self.files = FileSystemLoader(str(templates_dir))
        self.sources: dict[str, str] = {}

    def register(self, tenant_id: str, key: str, source: str) -> str:
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
        name = f"{OVERRIDE_PREFIX}{tenant_id}/{digest}/{key}"
        self.sources.setdefault(name, source)
        return name

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        if template.startswith(OVERRIDE_PREFIX):
            try:
                return self.sources[template], None, lambda: True
            except KeyError:
                raise TemplateNotFound(template) from None
        return self.files.get_source(environment, template)


def build_environment(templates_dir: Path) -> BudgetedEnvironment:
    env = BudgetedEnvironment(
        loader=OverrideLoader(templates_dir),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        auto_reload=False,
        cache_size=TEMPLATE_CACHE_SIZE,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["date"] = _date
    env.filters["money"] = _money
    env.budget_filters()
    return env
