"""The Jinja2 environment every template renders in.

Templates are untrusted input (tenants write their own), so they run in Jinja2's immutable
sandbox with render budgets (``streams/rendering/budget.py``: every loop item, call, write and
value counted or measured) and ``StrictUndefined`` (a misspelt merge tag is an error, not an empty
string) and autoescaping for HTML. Compiled templates stay in Jinja2's cache for the life of the
worker (``auto_reload`` off: a deployed template never changes under a running worker).

Filters format values for the mail's locale with Babel; the locale comes from the render context.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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


def _babel_locale(context: Context) -> str:
    # format_locale is resolved by the renderer; a template that sets it to something else still formats.
    return babel_locale(context.get("format_locale"), context.get("locale")).replace("-", "_")


@pass_context
def _date(context: Context, value: dt.date | dt.datetime, format: str = "long") -> str:
    if isinstance(value, dt.datetime):
        zone = ZoneInfo(str(context.get("time_zone", "UTC")))
        return format_datetime(value.astimezone(zone), format=format, locale=_babel_locale(context))
    return format_date(value, format=format, locale=_babel_locale(context))


@pass_context
def _money(context: Context, value: dict[str, Any]) -> str:
    currency = value["currency"]
    amount = Decimal(value["amount_minor"]).scaleb(-get_currency_precision(currency))
    return format_currency(amount, currency, locale=_babel_locale(context))


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
