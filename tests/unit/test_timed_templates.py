"""The mails of timed triggers: their events' schemas and samples, their templates and merge tags.

Every timed trigger renders in every language of its pack from a sample state of its entity (the
pack's samples of the events that feed it, applied as the worker applies them) and the timers the
trigger plans for that state, through ``timed_context`` exactly as the firing agent renders. Like
``test_packs.py`` these tests grow with the packs: a new timed trigger or language needs no new test.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import PACKS_DIR, Catalog, Trigger
from streams.domain.samples import sample_event
from streams.domain.tenants import Brand, SenderIdentity, Tenant
from streams.domain.timers import Timer
from streams.rendering.merge_tags import resolves, trigger_context
from streams.rendering.render import PARTS, Renderer, Source
from streams.settings import REPO_ROOT
from streams.tenants.validate import pack_problems
from streams.tools.preview import render_entry, timed_sample
from streams.triggers.firing import timed_context, timed_firings
from tests.unit.conftest import NOW
from tests.unit.test_lint import _edit, _lint

CATALOG = Catalog.load()
TIMED = {t.key: t for t in CATALOG.timed_triggers()}
CASES = [
    pytest.param(trigger, language, id=f"{trigger.key}-{language}")
    for trigger in CATALOG.timed_triggers()
    for language in CATALOG.packs[trigger.pack].languages
]
DUNNING = TIMED["storage/invoice.after_due"]


def _tenant(pack: str, language: str, time_zone: str = "Europe/Berlin") -> Tenant:
    """A tenant of the pack offering only ``language``, with every trigger of the pack on."""
    return Tenant(
        tenant_id="timed-check",
        packs=(pack,),
        languages=(language,),
        default_language=language,
        time_zone=time_zone,
        brand=Brand(name="Brandname Check", support_email="help@brand.example", postal_address="1 Road"),
        sender=SenderIdentity(from_address="mail@brand.example", from_name="Brandname Check"),
        triggers={t.key: {"enabled": True} for t in CATALOG.triggers() if t.pack == pack},  # type: ignore[misc]
    )


def _render(trigger: Trigger, tenant: Tenant, state: dict[str, Any], timer: Timer, renderer: Renderer) -> list[dict[str, Any]]:
    context = timed_context(trigger, timer, state, tenant, CATALOG.entity_of(trigger).fields())
    firings = timed_firings(trigger, timer, state, tenant, "sample")
    assert len(firings) == len(trigger.rule.mails)
    return [renderer.render(f, tenant, context, Source("t", "e", timer.due), timer.due).record for f in firings]


# ---- schemas and samples of the events that feed entities -----------------------------------


def test_every_event_feeding_an_entity_has_a_schema_and_a_sample_that_round_trips(
    schemas: SchemaRepository, codec: SingleObjectCodec
) -> None:
    feeding = {event for pack in CATALOG.packs.values() for spec in pack.entities.values() for event in spec.events}
    assert feeding, "no pack declares entities"
    for name in sorted(feeding):
        assert schemas.has(name), f"no schema for {name}"
        version = schemas.latest(name)
        assert version.parsed["fields"][0]["name"] == "envelope", f"{name}: the envelope comes first"
        data = codec.encode(name, sample_event(CATALOG.samples, name, "t", now=NOW))
        assert codec.encode(name, codec.decode(data).record) == data


def test_a_rescheduled_appointment_speaks_the_booked_ones_meeting_types_and_keeps_its_link_secret(
    schemas: SchemaRepository,
) -> None:
    def meeting_type(name: str) -> list[str]:
        field = next(f for f in schemas.latest(name).parsed["fields"] if f["name"] == "meeting_type")
        return list(field["type"]["symbols"])

    assert meeting_type("tidings.advisors.AppointmentRescheduled") == meeting_type("tidings.advisors.AppointmentBooked")
    assert schemas.latest("tidings.advisors.AppointmentRescheduled").secrets == ("meeting_url",)


# ---- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize(("trigger", "language"), CASES)
def test_timed_trigger_renders_in_every_pack_language(trigger: Trigger, language: str, renderer: Renderer) -> None:
    tenant = _tenant(trigger.pack, language)
    state, timers = timed_sample(CATALOG, trigger, tenant, NOW)
    assert state is not None and timers, f"the samples of {trigger.key}'s entity plan no timer"
    for mail in trigger.rule.mails:
        for part in PARTS:
            path = REPO_ROOT / "templates" / trigger.pack / mail.template / language / part
            assert path.is_file(), f"missing {path.relative_to(REPO_ROOT)}"
    for timer in timers:
        for mail in _render(trigger, tenant, state, timer, renderer):
            assert mail["locale"] == language
            assert mail["subject"] and len(mail["subject"]) <= 200
            for part in ("subject", "html", "text"):
                assert "{{" not in mail[part] and "{%" not in mail[part], f"unrendered Jinja in {part}"
                assert "None" not in mail[part], f"a null value printed in {part}"
            assert "Brandname Check" in mail["html"] and "Brandname Check" in mail["text"]
            assert mail["html"].lstrip().lower().startswith("<!doctype html>")


@pytest.mark.parametrize("language", CATALOG.packs["storage"].languages)
def test_each_dunning_step_is_worded_differently_and_more_firmly(language: str, renderer: Renderer) -> None:
    tenant = _tenant("storage", language)
    state, timers = timed_sample(CATALOG, DUNNING, tenant, NOW)
    assert state is not None and [t.step for t in timers] == [1, 2, 3]
    mails = [_render(DUNNING, tenant, state, timer, renderer)[0] for timer in timers]
    assert len({m["subject"] for m in mails}) == 3
    assert len({m["text"] for m in mails}) == 3
    first, final = {"en": ("Payment reminder", "Final reminder"), "de": ("Zahlungserinnerung", "Letzte Mahnung")}[language]
    assert mails[0]["subject"].startswith(first) and mails[2]["subject"].startswith(final)
    assert str(state["invoice_number"]) in mails[1]["subject"]
    assert "10" in mails[1]["text"] and "20" in mails[2]["text"]  # days overdue, from timer.params.steps


def test_a_tenants_own_dunning_steps_end_with_the_final_reminder(renderer: Renderer) -> None:
    triggers = {DUNNING.key: {"enabled": True, "params": {"steps": [7, 21]}}}
    tenant = Tenant.model_validate({**_tenant("storage", "en").model_dump(), "triggers": triggers})
    state, timers = timed_sample(CATALOG, DUNNING, tenant, NOW)
    assert state is not None
    subjects = [_render(DUNNING, tenant, state, t, renderer)[0]["subject"] for t in timers]
    assert [s.split(":")[0] for s in subjects] == ["Payment reminder", "Final reminder"]


def test_an_appointment_reminder_shows_the_time_in_the_customers_zone(renderer: Renderer) -> None:
    trigger = TIMED["advisors/appointment.reminder"]
    tenant = _tenant("advisors", "en")
    state, (timer,) = timed_sample(CATALOG, trigger, tenant, NOW)
    assert state is not None and state["starts_at"] == dt.datetime(2026, 12, 3, 13, 0, tzinfo=dt.timezone.utc)
    state["customer"] = {**state["customer"], "time_zone": "America/New_York"}
    (mail,) = _render(trigger, tenant, state, timer, renderer)
    assert "08:00" in mail["subject"] and "08:00–08:45" in mail["text"] and "Eastern" in mail["text"]
    # The join link is a secret of this mail: it reaches the customer's reminder and only it.
    assert state["meeting_url"] in mail["text"]


# ---- merge tags and lint ----------------------------------------------------------------------


def test_the_merge_tags_of_a_timed_trigger_are_its_state_fields_and_timer(schemas: SchemaRepository) -> None:
    context = trigger_context(schemas, CATALOG, TIMED["storage/booking.before_move_out"])
    assert context["move_out_date"].type == "date or null" and context["move_in_date"].type == "date"
    assert context["status"].type == "string" and "`cancelled` on `BookingCancelled`" in context["status"].doc
    assert context["created_at"].type == "timestamp (UTC)"  # copied from envelope.occurred_at
    assert resolves(context["monthly_price"], ("currency",)) and resolves(context["customer"], ("time_zone",))
    assert resolves(context["timer"], ("params", "days")) and not resolves(context["timer"], ("params", "steps"))
    assert "booking_id" in context and "invoice_number" not in context  # only what the pack copies
    dunning = trigger_context(schemas, CATALOG, DUNNING)
    assert resolves(dunning["timer"], ("params", "steps", 0)) and resolves(dunning["timer"], ("step",))
    unread = trigger_context(schemas, CATALOG, TIMED["advisors/message.unread_reminder"])
    assert unread["unanswered_since"].optional and unread["awaiting_reply"].type == "boolean"
    slots = trigger_context(schemas, CATALOG, TIMED["advisors/advisor.slot_reminder"])
    assert slots["timer"].fields["params"].fields["min_slots"].type == "int"
    reminder = trigger_context(schemas, CATALOG, TIMED["advisors/appointment.reminder"])
    assert reminder["meeting_url"].secret and reminder["manage_url"].secret


@pytest.fixture
def dunning_workspace(tmp_path: Path) -> Path:
    """The storage pack cut down to the dunning trigger and its entity, its templates and a tenant."""
    pack = yaml.safe_load((PACKS_DIR / "storage" / "pack.yaml").read_text(encoding="utf-8"))
    pack["entities"] = {"invoices": pack["entities"]["invoices"]}
    pack["triggers"] = {"invoice.after_due": pack["triggers"]["invoice.after_due"]}
    (tmp_path / "packs" / "storage").mkdir(parents=True)
    (tmp_path / "packs" / "storage" / "pack.yaml").write_text(yaml.safe_dump(pack, sort_keys=False), encoding="utf-8")
    shutil.copy(PACKS_DIR / "storage" / "samples.yaml", tmp_path / "packs" / "storage" / "samples.yaml")
    shutil.copytree(REPO_ROOT / "templates" / "_layouts", tmp_path / "templates" / "_layouts")
    shutil.copytree(REPO_ROOT / "templates/storage/invoice.after_due", tmp_path / "templates/storage/invoice.after_due")
    tenant = yaml.safe_load((REPO_ROOT / "deploy" / "tenants" / "lagerhaus-nord.yaml").read_text(encoding="utf-8"))
    tenant["triggers"] = {DUNNING.key: {"enabled": True}}
    (tmp_path / "tenants").mkdir()
    (tmp_path / "tenants" / "lagerhaus-nord.yaml").write_text(yaml.safe_dump(tenant, allow_unicode=True), encoding="utf-8")
    return tmp_path


def test_a_timed_template_using_a_field_the_state_does_not_have_fails(dunning_workspace: Path) -> None:
    assert _lint(dunning_workspace) == []
    folder = "templates/storage/invoice.after_due"
    subject = _edit(dunning_workspace / folder / "en" / "subject.txt", "{{ invoice_number }}", "{{ invoice_id }}")
    body = _edit(dunning_workspace / folder / "de" / "body.txt", "timer.params.steps", "timer.params.days")
    assert _lint(dunning_workspace) == [
        f"{folder}/de/body.txt:{body}: unknown merge tag 'timer.params.days' for trigger {DUNNING.key}",
        f"{folder}/en/subject.txt:{subject}: unknown merge tag 'invoice_id' for trigger {DUNNING.key}",
    ]


def test_a_timed_rule_and_an_entity_must_name_fields_that_exist(dunning_workspace: Path) -> None:
    pack_file = dunning_workspace / "packs" / "storage" / "pack.yaml"
    at = _edit(pack_file, "at: due_date", "at: due_day")
    key = _edit(pack_file, "id: invoice_id", "id: invoice_key")
    events = ("InvoiceIssued", "InvoicePaid", "InvoiceVoided")
    assert sorted(_lint(dunning_workspace)) == sorted([
        f"packs/storage/pack.yaml:{at}: {DUNNING.key}: at 'due_day' is not a field of the state of entity storage.invoices",
        *(
            f"packs/storage/pack.yaml:{key}: entity storage.invoices: id 'invoice_key' is not a field of tidings.storage.{e}"
            for e in events
        ),
    ])


def test_a_tenants_override_of_a_timed_mail_is_checked_against_the_state(tenants: Any) -> None:
    base = tenants.get("lagerhaus-nord")
    assert base is not None
    own = "{{ invoice_number }} {{ timer.step }}"
    good = {f"storage/invoice.after_due/{lang}/{part}": own for lang in ("de", "en") for part in PARTS}
    tenant = Tenant.model_validate({**base.model_dump(), "templates": {**base.templates, **good}})
    assert list(pack_problems(tenant, CATALOG, REPO_ROOT / "templates")) == []
    bad = {**good, "storage/invoice.after_due/de/subject.txt": "{{ booking_id }}"}
    tenant = Tenant.model_validate({**base.model_dump(), "templates": {**base.templates, **bad}})
    assert list(pack_problems(tenant, CATALOG, REPO_ROOT / "templates")) == [
        (
            "templates.storage/invoice.after_due/de/subject.txt",
            f"line 1: unknown merge tag 'booking_id' for trigger {DUNNING.key}",
        )
    ]


# ---- the sample state and the gallery ----------------------------------------------------------


def test_the_sample_state_is_one_in_which_the_trigger_still_fires() -> None:
    station, timers = timed_sample(CATALOG, TIMED["charging/evse.connectivity_lost"], _tenant("charging", "en"), NOW)
    assert station is not None and station["status"] == "active" and len(timers) == 1  # the deactivation is left out
    invoice, _ = timed_sample(CATALOG, DUNNING, _tenant("storage", "en"), NOW)
    assert invoice is not None and invoice["status"] == "open"  # the payment, which forgets it, is left out
    booking, _ = timed_sample(CATALOG, TIMED["storage/booking.before_move_out"], _tenant("storage", "en"), NOW)
    assert booking is not None and booking["status"] == "active" and booking["move_out_date"] == dt.date(2027, 5, 31)


def test_the_gallery_shows_every_dunning_step(renderer: Renderer) -> None:
    tenant = _tenant("storage", "de")
    entries = render_entry(renderer, CATALOG, tenant, DUNNING, DUNNING.rule.mails[0], "de", NOW)
    assert [(e.step, e.error) for e, _ in entries] == [(1, ""), (2, ""), (3, "")]
    assert len({e.html_file for e, _ in entries}) == 3 and all(page for _, page in entries)
