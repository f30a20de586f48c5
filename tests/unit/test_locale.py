from __future__ import annotations

import pytest

from streams.rendering.locale import choose_locale, normalize


@pytest.mark.parametrize(
    ("requested", "offered", "default", "available", "expected"),
    [
        ("de-AT", ("de", "en"), "de", {"de", "en"}, ("de", "language")),
        ("de-AT", ("de-AT", "de"), "de", {"de-AT", "de"}, ("de-AT", "exact")),
        ("de_at", ("de-AT",), "de-AT", {"de-AT"}, ("de-AT", "exact")),
        ("EN", ("de", "en"), "de", {"de", "en"}, ("en", "exact")),
        ("fr", ("de", "en"), "de", {"de", "en"}, ("de", "tenant_default")),
        (None, ("de", "en"), "de", {"de", "en"}, ("de", "tenant_default")),
        ("", ("nl", "en"), "nl", {"nl", "en"}, ("nl", "tenant_default")),
        # Offered by the tenant but the trigger lacks the template: fall through.
        ("de", ("de", "en"), "de", {"en"}, ("en", "english")),
        # Neither the request nor the default has templates, and no English either.
        ("de", ("de", "fr"), "de", {"fr"}, ("fr", "any")),
    ],
)
def test_fallback_chain(requested, offered, default, available, expected) -> None:  # type: ignore[no-untyped-def]
    assert choose_locale(requested, offered, default, available) == expected


def test_normalize() -> None:
    assert normalize("pt_br") == "pt-BR"
    assert normalize("zh-Hant-TW") == "zh"
