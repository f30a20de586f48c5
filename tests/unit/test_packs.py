"""Every trigger of every pack renders, from its pack's sample event, in every language the pack ships.

These tests grow with the packs: a new trigger, language or template is covered without a new test.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog, Trigger
from streams.domain.samples import sample_event
from streams.domain.tenants import Brand, SenderIdentity, Tenant, TenantDirectory
from streams.rendering.render import PARTS, Renderer, Source
from streams.settings import REPO_ROOT
from tests.unit.conftest import NOW

CATALOG = Catalog.load()
CASES = [
    pytest.param(trigger, language, id=f"{trigger.key}-{language}")
    for trigger in CATALOG.event_triggers()
    for language in CATALOG.packs[trigger.pack].languages
]


def _tenant(pack: str, language: str) -> Tenant:
    """A tenant of the pack offering only ``language``, with every trigger of the pack on."""
    return Tenant(
        tenant_id="pack-check",
        packs=(pack,),
        languages=(language,),
        default_language=language,
        time_zone="Europe/Berlin",
        brand=Brand(name="Brandname Check", support_email="help@brand.example", postal_address="1 Road"),
        sender=SenderIdentity(from_address="mail@brand.example", from_name="Brandname Check"),
        triggers={t.key: {"enabled": True} for t in CATALOG.triggers() if t.pack == pack},  # type: ignore[misc]
    )


def test_every_routed_event_type_has_a_schema_and_a_sample(schemas: SchemaRepository) -> None:
    for name in CATALOG.event_types():
        assert schemas.has(name), f"no schema for {name}"
        assert name in CATALOG.samples, f"no sample for {name} in its pack's samples.yaml"


def test_samples_are_valid_events(codec: SingleObjectCodec) -> None:
    for name in CATALOG.samples:
        data = codec.encode(name, sample_event(CATALOG.samples, name, "t", now=NOW))
        assert codec.encode(name, codec.decode(data).record) == data


@pytest.mark.parametrize(("trigger", "language"), CASES)
def test_trigger_renders_in_every_pack_language(trigger: Trigger, language: str, renderer: Renderer) -> None:
    tenant = _tenant(trigger.pack, language)
    event = sample_event(CATALOG.samples, trigger.rule.event, tenant.tenant_id, now=NOW)
    firings = [f for f in event_firings(trigger.rule.event, event, CATALOG, tenant) if f.trigger == trigger]
    assert len(firings) == len(trigger.rule.mails)
    for firing in firings:
        for part in PARTS:
            path = REPO_ROOT / "templates" / trigger.pack / firing.mail.template / language / part
            assert path.is_file(), f"missing {path.relative_to(REPO_ROOT)}"
        mail: dict[str, Any] = renderer.render(firing, tenant, event, Source("t", "e", NOW), NOW).record
        assert mail["locale"] == language
        assert mail["subject"] and len(mail["subject"]) <= 200
        for part in ("subject", "html", "text"):
            assert "{{" not in mail[part] and "{%" not in mail[part], f"unrendered Jinja in {part}"
        assert "Brandname Check" in mail["html"] and "Brandname Check" in mail["text"]
        assert mail["html"].lstrip().lower().startswith("<!doctype html>")


def test_example_tenants_only_name_real_packs_and_triggers(tenants: TenantDirectory) -> None:
    keys = {t.key for t in CATALOG.triggers()}
    for tenant in tenants:
        assert set(tenant.packs) <= set(CATALOG.packs), tenant.tenant_id
        assert set(tenant.triggers) <= keys, f"{tenant.tenant_id}: {set(tenant.triggers) - keys}"


def test_mails_a_person_waits_for_are_high_priority_and_reminders_bulk() -> None:
    by_key = {t.key: t.rule for t in CATALOG.triggers()}
    for key in ("storage/customer.password_reset", "charging/auth.password_reset", "charging/auth.mfa_enabled",
                "advisors/auth.password_reset"):
        assert by_key[key].priority == "high", key
    assert by_key["advisors/advisor.slot_reminder"].priority == "bulk"
    assert by_key["storage/booking.created"].priority == "normal"
    opt_out = {k for k, r in by_key.items() if not r.transactional}
    assert opt_out == {"storage/booking.after_move_in", "storage/booking.after_created", "advisors/advisor.slot_reminder"}


def test_a_v2_outbound_record_reads_as_normal_transactional_and_untagged(codec: SingleObjectCodec, schemas: SchemaRepository,
                                                                          renderer: Renderer) -> None:
    trigger = next(t for t in CATALOG.event_triggers() if t.key == "charging/auth.mfa_enabled")
    tenant = _tenant("charging", "en")
    event = sample_event(CATALOG.samples, trigger.rule.event, tenant.tenant_id, now=NOW)
    firing = next(iter(event_firings(trigger.rule.event, event, CATALOG, tenant)))
    mail = renderer.render(firing, tenant, event, Source("t", "e", NOW), NOW).record
    assert (mail["priority"], mail["transactional"]) == ("high", True)
    assert mail["tags"] == {"tenant": "pack-check", "trigger": "charging-auth_mfa_enabled"}
    assert codec.decode(codec.encode("tidings.outbound.RenderedEmail", mail)).record["priority"] == "high"
    old = {k: v for k, v in mail.items() if k not in ("priority", "transactional", "tags")}
    v2 = codec.encode("tidings.outbound.RenderedEmail", old, version=2)
    read = codec.decode(v2).record
    assert (read["priority"], read["transactional"], read["tags"]) == ("normal", True, {})
