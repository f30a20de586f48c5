"""One event for every event trigger of every pack, through a real worker into the SES emulator.

For each pack the test takes an example tenant that offers the pack, publishes the pack's sample
event of every trigger (each recipient given an address unique to this run and role), and checks
that exactly the expected mails arrive: right recipient, right trigger, right language, and the
subject and text the templates give for that event and tenant (rendered in-process for
comparison; that the merge-tag values themselves are right is checked per template in
tests/unit/test_render.py and tests/unit/test_packs.py).
"""

from __future__ import annotations

import collections
from typing import Any

from deploy.local.samples import tiny_pdf
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.domain.tenants import Tenant, TenantDirectory
from streams.rendering.render import Renderer, Source
from streams.settings import REPO_ROOT
from tests.integration.harness import Deployment

CATALOG = Catalog.load()
TENANTS = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants")


def _tenant_for(pack: str) -> Tenant:
    keys = {t.key for t in CATALOG.event_triggers() if t.pack == pack}
    for tenant in TENANTS:
        if pack in tenant.packs and all(tenant.is_enabled(k) for k in keys):
            return tenant
    raise AssertionError(f"no example tenant in deploy/tenants enables every trigger of pack {pack}")


def test_every_event_trigger_of_every_pack_is_delivered(deployment: Deployment) -> None:
    renderer = Renderer(REPO_ROOT / "templates")
    expected: dict[str, dict[str, Any]] = {}  # recipient address -> what its mail must look like
    events = []
    for trigger in CATALOG.triggers():
        if trigger.rule.kind != "event":
            continue
        tenant = _tenant_for(trigger.pack)

        def unique(path: str, person: dict[str, Any], key: str = trigger.key) -> dict[str, Any]:
            slug = f"{key}.{path}".replace("/", "-").replace("_", "-")
            return {**person, "email": deployment.email(slug)}

        event = sample_event(CATALOG.samples, trigger.rule.event, tenant.tenant_id, recipient=unique)
        for firing in event_firings(trigger.rule.event, event, CATALOG, tenant):
            if firing.trigger != trigger:
                continue
            mail = renderer.render(firing, tenant, event, Source("t", "e", event["envelope"]["occurred_at"]), event["envelope"]["occurred_at"]).record
            expected[mail["to_address"]] = {"mail": mail, "trigger": trigger.key}
        events.append((trigger.rule.event, event, trigger.rule.entity))

    deployment.start_worker()
    for type_name, event, entity_path in events:
        key = event
        for step in entity_path.split("."):
            key = key[step]
        deployment.publisher.publish(deployment.topics.for_event(type_name), type_name, event, key=str(key))
    deployment.publisher.flush()

    mails = deployment.wait_for_mails(len(expected), timeout=180)
    counts = collections.Counter(m.destinations[0] for m in mails)
    assert {a: n for a, n in counts.items() if n != 1} == {}, "a mail arrived twice"
    assert set(counts) == set(expected)
    for mail in mails:
        want = expected[mail.destinations[0]]
        assert mail.header("X-Tidings-Trigger") == want["trigger"]
        assert mail.subject == want["mail"]["subject"]
        assert mail.header("Content-Language") == want["mail"]["locale"]
        # The tenant's SES configuration set travels with its mails (beraterfinder sets one).
        assert mail.header("X-SES-CONFIGURATION-SET") == want["mail"]["headers"].get("X-SES-CONFIGURATION-SET")
        assert mail.part("plain").replace("\r\n", "\n").strip() == want["mail"]["text"].strip()
        # Invoice PDFs: fetched from the object store by the sender and attached, byte for byte.
        assert mail.attachments() == [(a["filename"], tiny_pdf(a["uri"])) for a in want["mail"]["attachments"]]
    assert sum(len(m.attachments()) for m in mails) == 3  # the three charging invoices with a PDF
    assert len({m.header("X-Tidings-Trigger") for m in mails}) == len(CATALOG.event_triggers())
