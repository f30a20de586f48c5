"""The template lint: the repository passes, and each kind of mistake is reported with file and line.

The failing cases build a small workspace in ``tmp_path``: the storage pack cut down to
``booking.created``, copies of the layouts and of that trigger's templates, and a tenant. The
repository's own files are never touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import PACKS_DIR, Catalog
from streams.rendering.merge_tags import resolves, trigger_context
from streams.settings import REPO_ROOT
from streams.tools.lint import lint, main

TRIGGER = "storage/booking.created"
TEMPLATE = "templates/storage/booking.created"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    pack = yaml.safe_load((PACKS_DIR / "storage" / "pack.yaml").read_text(encoding="utf-8"))
    pack["triggers"] = {"booking.created": pack["triggers"]["booking.created"]}
    (tmp_path / "packs" / "storage").mkdir(parents=True)
    (tmp_path / "packs" / "storage" / "pack.yaml").write_text(yaml.safe_dump(pack), encoding="utf-8")
    shutil.copy(PACKS_DIR / "storage" / "samples.yaml", tmp_path / "packs" / "storage" / "samples.yaml")
    shutil.copytree(REPO_ROOT / "templates" / "_layouts", tmp_path / "templates" / "_layouts")
    shutil.copytree(REPO_ROOT / TEMPLATE, tmp_path / TEMPLATE)
    tenant = yaml.safe_load((REPO_ROOT / "deploy" / "tenants" / "lagerhaus-nord.yaml").read_text(encoding="utf-8"))
    tenant["triggers"] = {TRIGGER: {"enabled": True}}
    (tmp_path / "tenants").mkdir()
    (tmp_path / "tenants" / "lagerhaus-nord.yaml").write_text(yaml.safe_dump(tenant, allow_unicode=True), encoding="utf-8")
    return tmp_path


def _lint(ws: Path) -> list[str]:
    report = lint(templates_dir=ws / "templates", packs_dir=ws / "packs", tenants_dir=ws / "tenants", root=ws)
    return [str(p) for p in report.problems]


def _edit(path: Path, old: str, new: str) -> int:
    """Replace the first ``old`` in ``path``; returns the 1-based line of the change."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def test_the_repository_passes_lint() -> None:
    report = lint()
    assert report.problems == [], "\n".join(map(str, report.problems))
    templates = sum(1 for path in (REPO_ROOT / "templates").rglob("*") if path.is_file())
    assert report.templates == templates
    assert report.tags > 1000 and report.tenants == len(list((REPO_ROOT / "deploy" / "tenants").glob("*.yaml")))


def test_the_workspace_passes_before_any_edit(workspace: Path) -> None:
    assert _lint(workspace) == []


def test_a_misspelt_merge_tag_fails_with_file_line_and_tag(workspace: Path) -> None:
    line = _edit(workspace / TEMPLATE / "en" / "body.html", "{{ customer.name }}", "{{ customer.nmae }}")
    assert _lint(workspace) == [f"{TEMPLATE}/en/body.html:{line}: unknown merge tag 'customer.nmae' for trigger {TRIGGER}"]


def test_an_unknown_top_level_tag_and_a_wrong_nested_field_of_an_optional_record_fail(workspace: Path) -> None:
    top = _edit(workspace / TEMPLATE / "de" / "subject.txt", "{{ site_name }}", "{{ site_nmae }}")
    nested = _edit(workspace / TEMPLATE / "de" / "body.txt", "{{ monthly_price | money }}", "{{ monthly_price.curency }}")
    assert _lint(workspace) == [
        f"{TEMPLATE}/de/body.txt:{nested}: unknown merge tag 'monthly_price.curency' for trigger {TRIGGER}",
        f"{TEMPLATE}/de/subject.txt:{top}: unknown merge tag 'site_nmae' for trigger {TRIGGER}",
    ]


def test_real_paths_set_and_loop_variables_and_python_attributes_pass(workspace: Path) -> None:
    _edit(
        workspace / TEMPLATE / "en" / "body.txt",
        "{% endblock %}",
        "{{ monthly_price.currency }} {{ monthly_price['amount_minor'] }} {{ envelope.occurred_at.year }}\n"
        "{{ customer.name.upper() }} {{ recipient.locale }} {{ brand.accent_color }} {{ format_locale }} {{ time_zone }}\n"
        "{% set labels = {'a': 'A'} %}{{ labels.get('a') }}{% for c in customer.name %}{{ loop.index }}{{ c }}{% endfor %}\n"
        "{% endblock %}",
    )
    assert _lint(workspace) == []


def test_a_missing_language_part_fails(workspace: Path) -> None:
    (workspace / TEMPLATE / "de" / "body.txt").unlink()
    problems = _lint(workspace)
    assert f"{TEMPLATE}/de/body.txt: missing: {TRIGGER} (customer mail) needs body.txt in de, a language of pack storage" in problems
    # The example tenant offers German too, so it is told which of its mails cannot be sent.
    assert any(p.startswith("tenants/lagerhaus-nord.yaml:") and "lacks body.txt" in p for p in problems), problems


def test_a_syntax_error_fails_with_file_and_line(workspace: Path) -> None:
    path = workspace / TEMPLATE / "en" / "body.txt"
    line = _edit(path, "{% if move_out_date %}", "{% iff move_out_date %}")
    problems = _lint(workspace)
    assert len(problems) == 1 and problems[0].startswith(f"{TEMPLATE}/en/body.txt:{line}: syntax error: "), problems


def test_an_unknown_filter_fails(workspace: Path) -> None:
    line = _edit(workspace / TEMPLATE / "en" / "body.html", "move_in_date | date", "move_in_date | dat")
    assert _lint(workspace) == [f"{TEMPLATE}/en/body.html:{line}: unknown filter 'dat'"]


def test_a_block_the_layout_does_not_have_fails(workspace: Path) -> None:
    line = _edit(workspace / TEMPLATE / "de" / "body.html", "{% block content %}", "{% block contnet %}")
    assert _lint(workspace) == [
        f"{TEMPLATE}/de/body.html:{line}: block 'contnet' is not in _layouts/base.html (it has content, footer, title)"
    ]


def test_layouts_may_use_only_what_every_mail_receives(workspace: Path) -> None:
    line = _edit(workspace / "templates" / "_layouts" / "base.txt", "{{ brand.name }}", "{{ booking_id }}")
    assert _lint(workspace) == [
        f"templates/_layouts/base.txt:{line}: unknown merge tag 'booking_id' (layouts receive only what every mail receives)"
    ]


def test_a_tenant_offering_a_language_without_templates_fails(workspace: Path) -> None:
    path = workspace / "tenants" / "lagerhaus-nord.yaml"
    tenant = yaml.safe_load(path.read_text(encoding="utf-8"))
    tenant["languages"] = ["de", "en", "fr"]
    path.write_text(yaml.safe_dump(tenant, allow_unicode=True), encoding="utf-8")
    line = next(n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text.startswith("languages:"))
    assert _lint(workspace) == [
        f"tenants/lagerhaus-nord.yaml:{line + 1}: tenant lagerhaus-nord offers 'fr' and has {TRIGGER} on, "
        f"but {TEMPLATE}/fr/ lacks subject.txt, body.html, body.txt"
    ]


def test_a_tenant_with_the_trigger_off_needs_no_templates_for_it(workspace: Path) -> None:
    path = workspace / "tenants" / "lagerhaus-nord.yaml"
    tenant = yaml.safe_load(path.read_text(encoding="utf-8"))
    tenant["languages"], tenant["triggers"] = ["de", "fr"], {TRIGGER: {"enabled": False}}
    path.write_text(yaml.safe_dump(tenant, allow_unicode=True), encoding="utf-8")
    assert _lint(workspace) == []


def test_an_attachment_file_name_is_checked_like_a_template(tmp_path: Path) -> None:
    pack = yaml.safe_load((PACKS_DIR / "charging" / "pack.yaml").read_text(encoding="utf-8"))
    rule = pack["triggers"]["invoice.msp_ready"]
    rule["mails"][0]["attachments"][0]["filename"] = "invoice-{{ invoice_nr }}.pdf"
    pack["triggers"] = {"invoice.msp_ready": rule}
    (tmp_path / "packs" / "charging").mkdir(parents=True)
    (tmp_path / "packs" / "charging" / "pack.yaml").write_text(yaml.safe_dump(pack), encoding="utf-8")
    shutil.copytree(REPO_ROOT / "templates" / "_layouts", tmp_path / "templates" / "_layouts")
    shutil.copytree(REPO_ROOT / "templates/charging/invoice.msp_ready", tmp_path / "templates/charging/invoice.msp_ready")
    shutil.copytree(REPO_ROOT / "templates/charging/_invoice", tmp_path / "templates/charging/_invoice")  # its shared body
    (tmp_path / "tenants").mkdir()
    problems = _lint(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("packs/charging/pack.yaml:"), problems
    assert problems[0].endswith("unknown merge tag 'invoice_nr' for trigger charging/invoice.msp_ready")


def test_paths_through_unions_maps_and_arrays(schemas: SchemaRepository) -> None:
    catalog = Catalog.load()
    (trigger,) = catalog.for_event("tidings.advisors.AppointmentRequested")
    context = trigger_context(schemas, catalog, trigger)
    assert resolves(context["preferred_dates"], (0, "year"))
    assert not resolves(context["preferred_dates"], ("first",))
    assert resolves(context["meeting_type"], ("upper",))  # an optional enum is a str when present
    assert resolves(context["customer"], ("locale",)) and not resolves(context["customer"], ("locale", "nope"))


def test_the_command_line_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lint: ") and "merge tags checked, no problems" in out


def test_a_shared_part_is_checked_against_every_trigger_that_uses_it(workspace: Path) -> None:
    # Move the English HTML body into a shared part with a nested block the trigger fills in.
    mail = workspace / TEMPLATE / "en" / "body.html"
    shared = workspace / "templates" / "storage" / "_shared" / "en" / "body.html"
    shared.parent.mkdir(parents=True)
    shared.write_text(mail.read_text(encoding="utf-8").replace(
        "{% block content %}", "{% block content %}<p>{% block intro %}{% endblock %}</p>", 1), encoding="utf-8")
    mail.write_text('{% extends "storage/_shared/en/body.html" %}{% block intro %}Hi{% endblock %}', encoding="utf-8")
    assert _lint(workspace) == []  # the nested block is new, not a misnamed override

    line = _edit(shared, "{{ booking_id }}", "{{ bookng_id }}")
    assert _lint(workspace) == [
        f"templates/storage/_shared/en/body.html:{line}: unknown merge tag 'bookng_id' for trigger {TRIGGER}"
    ]
