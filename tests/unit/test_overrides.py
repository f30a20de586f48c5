"""A tenant's own templates: used for that tenant only, validated like the packs' files."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.domain.tenants import Tenant, TenantDirectory
from streams.errors import RenderFailed
from streams.rendering.render import PARTS, Renderer, Source
from streams.settings import REPO_ROOT
from streams.tenants.validate import pack_problems
from tests.unit.conftest import NOW

CATALOG = Catalog.load()
CANCELLED = "tidings.storage.BookingCancelled"
TEMPLATES = REPO_ROOT / "templates"


def _render(renderer: Renderer, tenant: Tenant, locale: str = "de") -> dict:  # type: ignore[type-arg]
    event = sample_event(CATALOG.samples, CANCELLED, tenant.tenant_id, now=NOW)
    event["customer"]["locale"] = locale
    (firing,) = event_firings(CANCELLED, event, CATALOG, tenant)
    return renderer.render(firing, tenant, event, Source("t", "e", NOW), NOW).record


def _with(tenant: Tenant, templates: dict[str, str]) -> Tenant:
    return Tenant.model_validate({**tenant.model_dump(), "templates": templates})


def _full_set(subject: str, languages: tuple[str, ...] = ("de", "en")) -> dict[str, str]:
    out = {}
    for lang in languages:
        out[f"storage/booking.cancelled/{lang}/subject.txt"] = subject
        out[f"storage/booking.cancelled/{lang}/body.html"] = '{% extends "_layouts/base.html" %}{% block content %}<p>{{ unit_name }}</p>{% endblock %}'
        out[f"storage/booking.cancelled/{lang}/body.txt"] = "{{ unit_name }}"
    return out


def test_the_example_tenant_writes_its_own_cancellation_mail(renderer: Renderer, tenants: TenantDirectory) -> None:
    own = tenants.get("lagerhaus-nord")
    other = tenants.get("boxit-london")
    assert own is not None and other is not None
    assert set(own.templates) == {f"storage/booking.cancelled/{lang}/{part}" for lang in ("de", "en") for part in PARTS}
    mine = _render(renderer, own)
    assert mine["subject"].startswith("Kündigung bestätigt: ")
    assert "Schade, dass Sie gehen" in mine["html"] and "Lagerhaus Nord" in mine["html"]  # inside the brand layout
    theirs = _render(renderer, other, "en")
    assert not theirs["subject"].startswith("Cancellation confirmed")  # the pack's own wording for everyone else


def test_an_override_change_is_picked_up_without_a_stale_cache(renderer: Renderer, tenants: TenantDirectory) -> None:
    base = tenants.get("boxit-london")
    assert base is not None
    first = _render(renderer, _with(base, _full_set("Version one {{ unit_name }}", ("en",))), "en")
    second = _render(renderer, _with(base, _full_set("Version two {{ unit_name }}", ("en",))), "en")
    assert first["subject"].startswith("Version one") and second["subject"].startswith("Version two")


def test_a_runtime_error_in_an_override_fails_only_that_mail(renderer: Renderer, tenants: TenantDirectory) -> None:
    base = tenants.get("boxit-london")
    assert base is not None
    broken = _with(base, _full_set("{{ 1 / (site_name | length - site_name | length) }}", ("en",)))
    with pytest.raises(RenderFailed, match="ZeroDivisionError"):
        _render(renderer, broken, "en")
    assert _render(renderer, base, "en")["subject"]


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        (_full_set("Hi {{ customer.nmae }}", ("de", "en")), "unknown merge tag 'customer.nmae'"),
        (_full_set("Hi {{ unit_name ", ("de", "en")), "syntax error"),
        (_full_set("Hi", ("de",)), "lacks language 'en'"),
        ({**_full_set("Hi", ("de", "en")), "storage/booking.cancelled/fr/subject.txt": "Salut"}, "'fr' is not a language"),
        ({"storage/no.such.mail/de/subject.txt": "x"}, "no mail template 'no.such.mail'"),
        ({"storage/booking.cancelled/de/subject.html": "x"}, "part one of subject.txt"),
    ],
)
def test_an_invalid_override_is_refused_precisely(tenants: TenantDirectory, templates: dict[str, str], message: str) -> None:
    base = tenants.get("lagerhaus-nord")
    assert base is not None
    problems = [f"{field}: {text}" for field, text in pack_problems(_with(base, templates), CATALOG, TEMPLATES)]
    assert any(message in p for p in problems), problems


def test_overrides_are_read_from_the_folder_beside_the_tenant_file(tmp_path: Path) -> None:
    from streams.domain.tenants import load_tenant

    source = REPO_ROOT / "deploy" / "tenants" / "lagerhaus-nord.yaml"
    (tmp_path / "acme.yaml").write_text(source.read_text().replace("tenant_id: lagerhaus-nord", "tenant_id: acme"))
    folder = tmp_path / "acme" / "templates" / "storage" / "booking.cancelled" / "de"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Eigener Betreff")
    assert load_tenant(tmp_path / "acme.yaml").templates == {"storage/booking.cancelled/de/subject.txt": "Eigener Betreff"}
