from __future__ import annotations

import html
from typing import Any

import pytest

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.tenants import TenantDirectory
from streams.errors import InvalidRecipient, RenderFailed
from streams.rendering.render import Renderer, Source, single_line
from tests.unit.conftest import NOW

SOURCE = Source(topic="tidings.bookings", event_id="e-1", timestamp=NOW)


def _render(renderer: Renderer, tenants: TenantDirectory, event: dict[str, Any]) -> dict[str, Any]:
    tenant = tenants.get(event["envelope"]["tenant_id"])
    assert tenant is not None
    (firing,) = event_firings(BOOKING_CREATED, event, Catalog.load(), tenant)
    return renderer.render(firing, tenant, event, SOURCE, NOW).record


def test_german_booking_confirmation_carries_the_merge_tags(renderer: Renderer, tenants: TenantDirectory) -> None:
    event = booking_created("lagerhaus-nord", 0, locale="de-AT", occurred_at=NOW)  # n=0: a move-out date and a price
    mail = _render(renderer, tenants, event)
    assert mail["locale"] == "de"
    assert mail["subject"] == "Ihre Buchung bei Hamburg Hafencity ist bestätigt"
    for part in ("html", "text"):
        mail[part] = html.unescape(mail[part])  # a no-break space may be written as &nbsp; (the CSS inliner does)
        assert event["unit_name"] in mail[part]
        assert event["booking_id"] in mail[part]
        assert "23. Dezember 2026" in mail[part]  # Babel, German long date: NOW + 30 days
        assert "€\xa049,00" in mail[part]  # Babel, Austrian currency format (the recipient is de-AT)
    assert "Lagerhaus Nord" in mail["html"] and "#0b5394" in mail["html"]  # the tenant's brand
    assert mail["from_address"] == "buchung@lagerhaus-nord.example"
    assert mail["reply_to"] == "service@lagerhaus-nord.example"


def test_english_customer_of_a_german_tenant_gets_english(renderer: Renderer, tenants: TenantDirectory) -> None:
    mail = _render(renderer, tenants, booking_created("lagerhaus-nord", 0, locale="en-US", occurred_at=NOW))
    assert mail["locale"] == "en"
    assert "December 23, 2026" in mail["text"]
    assert "€49.00" in mail["text"]


def test_dates_and_money_follow_the_recipients_region(renderer: Renderer, tenants: TenantDirectory) -> None:
    british = _render(renderer, tenants, booking_created("lagerhaus-nord", 0, locale="en-GB", occurred_at=NOW))
    assert british["locale"] == "en" and "23 December 2026" in british["text"]
    swiss = _render(renderer, tenants, booking_created("lagerhaus-nord", 0, locale="de-CH", occurred_at=NOW))
    assert swiss["locale"] == "de" and "EUR\xa049.00" in swiss["text"]  # de-CH writes amounts the Swiss way


def test_customer_supplied_html_is_escaped(renderer: Renderer, tenants: TenantDirectory) -> None:
    event = booking_created("boxit-london", 1)
    event["customer"]["name"] = '<script>alert("x")</script>'
    event["unit_name"] = "<b onmouseover=alert(1)>A-1</b>"
    mail = _render(renderer, tenants, event)
    assert "<script>" not in mail["html"] and "&lt;script&gt;" in mail["html"]
    assert "<b onmouseover" not in mail["html"]


def test_line_breaks_in_names_never_reach_a_header(renderer: Renderer, tenants: TenantDirectory) -> None:
    event = booking_created("boxit-london", 1)
    event["customer"]["name"] = "Eve\r\nBcc: victim@example.com"
    event["site_name"] = "Depot\nX-Injected: 1"
    mail = _render(renderer, tenants, event)
    assert mail["to_name"] == "Eve Bcc: victim@example.com"
    assert "\n" not in mail["subject"] and "\r" not in mail["subject"]


def test_an_address_that_cannot_receive_mail_is_rejected(renderer: Renderer, tenants: TenantDirectory) -> None:
    with pytest.raises(InvalidRecipient):
        _render(renderer, tenants, booking_created("boxit-london", 1, email="nobody-at-example.org"))


def test_a_misspelt_merge_tag_fails_the_mail_not_silently(tmp_path, tenants: TenantDirectory) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "storage" / "booking.created" / "en"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hello {{ custmer.name }}")
    (folder / "body.html").write_text("x")
    (folder / "body.txt").write_text("x")
    with pytest.raises(RenderFailed, match="custmer"):
        _render(Renderer(tmp_path), tenants, booking_created("boxit-london", 1))


def test_single_line() -> None:
    assert single_line(" a\r\n\tb\x00c\u2028d  ") == "a b c d"


def test_a_tenants_ses_configuration_set_rides_with_its_mails(renderer: Renderer, tenants: TenantDirectory) -> None:
    from streams.domain.samples import sample_event

    catalog = Catalog.load()
    tenant = tenants.get("beraterfinder")
    assert tenant is not None and tenant.sender.configuration_set == "tidings-beraterfinder"
    event = sample_event(catalog.samples, "tidings.advisors.AdvisorInvited", tenant.tenant_id, now=NOW)
    (firing,) = event_firings("tidings.advisors.AdvisorInvited", event, catalog, tenant)
    mail = renderer.render(firing, tenant, event, SOURCE, NOW).record
    assert mail["headers"]["X-SES-CONFIGURATION-SET"] == "tidings-beraterfinder"
    others = _render(renderer, tenants, booking_created("boxit-london", 1))
    assert "X-SES-CONFIGURATION-SET" not in others["headers"]
