"""The Jinja2 environment every template renders in.

Templates are untrusted input (tenants write their own), so they run in Jinja2's
``SandboxedEnvironment`` with ``StrictUndefined`` (a misspelt merge tag is an error, not an empty
string) and autoescaping for HTML. Compiled templates stay in Jinja2's cache for the life of the
worker (``auto_reload`` off: a deployed template never changes under a running worker).

Filters format values for the mail's locale with Babel; the locale comes from the render context.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, get_currency_precision
from jinja2 import FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_CACHE_SIZE = 5000  # every trigger x language x part of every pack stays compiled


def _babel_locale(context: Context) -> str:
    return str(context.get("format_locale") or context.get("locale", "en")).replace("-", "_")


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


def build_environment(templates_dir: Path) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
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
    return env
