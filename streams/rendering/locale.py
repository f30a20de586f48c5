"""Which language a mail is rendered in.

Fallback chain: the recipient's locale exactly (de-AT) -> its language (de) -> the tenant's
default -> English. Only languages the tenant offers *and* the trigger has templates for count.
The step that matched is returned too, so metrics can show how often recipients get a fallback.

A requested locale is any syntactically valid BCP 47 tag (language, optional script and region,
further subtags ignored); anything else (``x-invalid``, ``../../etc``, ``""``) is treated as
absent. Formatting (dates, money, through Babel) falls back the same way (``babel_locale``):
the recipient's region when Babel knows it (``en-GB``), else its language (``en-EU`` formats as
``en``), else the tenant's default, else English; so an unusual region never fails a mail.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import lru_cache
from typing import Literal

from babel import Locale, UnknownLocaleError

Fallback = Literal["exact", "language", "tenant_default", "english", "any"]
LAST_RESORT = "en"


# language [-script] [-region] [-variants/extensions ...]; ``_`` accepted for ``-`` (POSIX style).
_BCP47 = re.compile(
    r"^(?P<language>[A-Za-z]{2,3})(?:[-_](?P<script>[A-Za-z]{4}))?(?:[-_](?P<region>[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:[-_][A-Za-z0-9]{1,8})*$"
)
# Longer than any real tag; bounds what a hostile value costs the regular expression.
_MAX_TAG = 64


def normalize(tag: object) -> str | None:
    """``de_at`` / ``DE-at`` -> ``de-AT``; ``zh-Hant-TW`` -> ``zh``; not a BCP 47 tag -> None (treated as absent)."""
    if not isinstance(tag, str) or len(tag) > _MAX_TAG:
        return None
    found = _BCP47.match(tag.strip())
    if found is None:
        return None
    language, region = found["language"].lower(), found["region"]
    if region and region.isalpha() and not found["script"]:
        return f"{language}-{region.upper()}"
    return language


@lru_cache(maxsize=1024)
def _babel_knows(tag: str) -> bool:
    try:
        Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return False
    return True


def babel_locale(*candidates: str | None) -> str:
    """The first candidate Babel can format in, each tried as given and then as its language; else English.

    Call with the most specific first: the recipient's tag (when it speaks the mail's language),
    the mail's language, the tenant's default.
    """
    for candidate in candidates:
        tag = normalize(candidate) if candidate else None
        if tag is None:
            continue
        for option in (tag, tag.split("-")[0]):
            if _babel_knows(option):
                return option
    return LAST_RESORT


def choose_locale(
    requested: str | None, offered: Collection[str], tenant_default: str, available: Collection[str]
) -> tuple[str, Fallback]:
    usable = [lang for lang in offered if lang in available]
    tag = normalize(requested) if requested else None
    if tag is not None:
        if tag in usable:
            return tag, "exact"
        language = tag.split("-")[0]
        if language in usable:
            return language, "language"
    if tenant_default in usable:
        return tenant_default, "tenant_default"
    if LAST_RESORT in available:
        return LAST_RESORT, "english"
    if usable:
        return usable[0], "any"
    # Reached only when a trigger has no template in any language; lint forbids that.
    return LAST_RESORT, "english"
