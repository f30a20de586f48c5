from __future__ import annotations

import pytest

from streams.rendering.locale import babel_locale, choose_locale, normalize


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


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("en-EU", "en-EU"), ("de-XX", "de-XX"), ("DE_at", "de-AT"), ("sr-Latn-RS", "sr"), ("es-419", "es"),
     ("x-invalid", None), ("../../etc", None), ("", None), ("e", None), ("en-" + "a" * 500, None), (None, None)],
)
def test_a_tag_that_is_not_bcp47_counts_as_absent(tag, expected) -> None:  # type: ignore[no-untyped-def]
    assert normalize(tag) == expected


@pytest.mark.parametrize(
    ("requested", "template", "default", "expected"),
    [("en-GB", "en", "de", "en-GB"), ("en-EU", "en", "de", "en"), ("de-XX", "de", "en", "de"),
     ("en-XA", "en", "de", "en"), ("de-AT", "en", "de", "en"), (None, "de", "en", "de"), ("x-invalid", "de", "en", "de")],
)
def test_formatting_falls_back_region_language_default_english(requested, template, default, expected) -> None:  # type: ignore[no-untyped-def]
    from streams.rendering.render import format_locale

    assert format_locale(requested, template, default) == expected
    assert babel_locale("qq-ZZ", None, "../x") == "en"


@pytest.mark.parametrize(
    ("requested", "language", "words"),
    [("en-EU", "en", "December"), ("de-EU", "de", "Dezember"), ("en-XA", "en", "December"), ("de-XX", "de", "Dezember"),
     ("x-invalid", "de", "Dezember"), ("../../etc", "de", "Dezember")],
)
def test_an_unusual_or_garbage_locale_renders_in_the_expected_language(renderer, tenants, requested, language, words) -> None:  # type: ignore[no-untyped-def]
    from deploy.local.samples import BOOKING_CREATED, booking_created
    from streams.domain.evaluate import event_firings
    from streams.domain.rules import Catalog
    from streams.rendering.render import Source
    from tests.unit.conftest import NOW

    tenant = tenants.get("lagerhaus-nord")  # offers de and en, default de
    event = booking_created("lagerhaus-nord", 1, locale=requested, occurred_at=NOW)  # moves in 2026-12-24
    (firing,) = event_firings(BOOKING_CREATED, event, Catalog.load(), tenant)
    rendered = renderer.render(firing, tenant, event, Source("t", "e", NOW), NOW)
    assert rendered.record["locale"] == language
    assert words in rendered.record["text"]
