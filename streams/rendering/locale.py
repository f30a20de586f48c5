"""Which language a mail is rendered in.

Fallback chain: the recipient's locale exactly (de-AT) -> its language (de) -> the tenant's
default -> English. Only languages the tenant offers *and* the trigger has templates for count.
The step that matched is returned too, so metrics can show how often recipients get a fallback.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

Fallback = Literal["exact", "language", "tenant_default", "english", "any"]
LAST_RESORT = "en"


def normalize(tag: str) -> str:
    """``de_at`` / ``DE-at`` -> ``de-AT``; anything unparseable -> its lower-cased first part."""
    parts = tag.replace("_", "-").strip().split("-")
    language = parts[0].lower()
    if len(parts) > 1 and len(parts[1]) == 2 and parts[1].isalpha():
        return f"{language}-{parts[1].upper()}"
    return language


def choose_locale(
    requested: str | None, offered: Collection[str], tenant_default: str, available: Collection[str]
) -> tuple[str, Fallback]:
    usable = [lang for lang in offered if lang in available]
    if requested:
        tag = normalize(requested)
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
