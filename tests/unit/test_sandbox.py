"""Tenant templates are untrusted: the sandbox refuses escapes, and tenants never mix."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import TemplateError

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.codecs.avro import SingleObjectCodec
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.domain.tenants import TenantDirectory
from streams.errors import RenderFailed
from streams.ingest.pipeline import IngestPipeline
from streams.rendering.environment import build_environment
from streams.rendering.render import Renderer, Source
from streams.settings import REPO_ROOT
from tests.unit.conftest import NOW

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ brand.__class__.__init__.__globals__ }}",
    "{{ customer.__class__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self.__init__.__globals__ }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ booking_id.format.__globals__ }}",
    "{{ range(100000000) | list | length }}",  # the sandbox caps range()
    "{{ lipsum.__globals__['os'] }}",
    "{% include '/etc/passwd' %}",
    "{% extends '../../../etc/passwd' %}",
]


def _renderer_with_subject(tmp_path: Path, subject: str) -> Renderer:
    folder = tmp_path / "storage" / "booking.created" / "en"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text(subject)
    (folder / "body.html").write_text("<p>x</p>")
    (folder / "body.txt").write_text("x")
    return Renderer(tmp_path)


@pytest.mark.parametrize("attack", ESCAPES)
def test_a_template_cannot_reach_python_internals(tmp_path: Path, tenants: TenantDirectory, attack: str) -> None:
    renderer = _renderer_with_subject(tmp_path, f"Hello {attack}")
    tenant = tenants.get("boxit-london")
    assert tenant is not None
    event = booking_created("boxit-london", 1)
    (firing,) = event_firings(BOOKING_CREATED, event, Catalog.load(), tenant)
    # Refused, so the mail is dead-lettered (render_failed) and the worker goes on.
    with pytest.raises(RenderFailed, match="SecurityError|OverflowError|TemplateNotFound"):
        renderer.render(firing, tenant, event, Source("t", "e", NOW), NOW)


def test_each_tenants_events_render_with_that_tenants_brand_only(
    pipeline: IngestPipeline, codec: SingleObjectCodec, tenants: TenantDirectory
) -> None:
    catalog = Catalog.load()
    brands = {t.tenant_id: t.brand.name for t in tenants}
    for tenant in tenants:
        for trigger in catalog.event_triggers():
            if trigger.pack not in tenant.packs or not tenant.is_enabled(trigger.key, trigger.rule.enabled_by_default):
                continue
            event = sample_event(catalog.samples, trigger.rule.event, tenant.tenant_id, now=NOW)
            result = pipeline.process(codec.encode(trigger.rule.event, event), topic="t", timestamp=NOW, now=NOW)
            for mail in (m.record for m in result.mails):
                assert mail["tenant_id"] == tenant.tenant_id
                assert mail["from_address"] == tenant.sender.from_address
                assert tenant.brand.name in mail["html"]
                others = {name for tid, name in brands.items() if tid != tenant.tenant_id and name not in tenant.brand.name}
                assert not [name for name in others if name in mail["html"] or name in mail["text"]], trigger.key


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ d.name }}", "Jana"),
        ("{{ d['name'] }}", "Jana"),
        ("{{ d.get('name') }}", "Jana"),  # a dict method is still the method
        ("{{ d.items()|list|length }}", "2"),
        ("{{ d.keys is defined }}", "True"),
        ("{{ s.name }}", "Jana"),  # a dict subclass goes the sandbox's way
    ],
)
def test_a_dict_item_is_read_as_the_sandbox_reads_it(source: str, expected: str) -> None:
    class Sub(dict):  # type: ignore[type-arg]
        pass

    env = build_environment(REPO_ROOT / "templates")
    context = {"d": {"name": "Jana", "items": "not the method"}, "s": Sub(name="Jana")}
    assert env.from_string(source).render(context) == expected


@pytest.mark.parametrize("source", ["{{ d.missing }}", "{{ d.__class__ }}", "{{ d.update }}", "{{ d.__class__.__mro__ }}"])
def test_a_missing_or_unsafe_dict_attribute_is_still_an_error(source: str) -> None:
    env = build_environment(REPO_ROOT / "templates")
    with pytest.raises(TemplateError):
        env.from_string(source).render({"d": {"name": "Jana"}})
