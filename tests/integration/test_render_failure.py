"""A tenant's template that fails at render time dead-letters that one mail; the rest go out."""

from __future__ import annotations

from pathlib import Path

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.rendering.render import PARTS
from streams.settings import REPO_ROOT
from streams.tenants import cli
from tests.integration.harness import Deployment

CATALOG = Catalog.load()
CANCELLED = "tidings.storage.BookingCancelled"
# Valid template text (it compiles, its merge tags exist), so publishing accepts it; it divides by
# zero only when it renders.
BROKEN = "{{ 1 / (site_name | length - site_name | length) }}"


def _tenant_with_broken_override(folder: Path) -> Path:
    folder.mkdir()
    source = REPO_ROOT / "deploy" / "tenants" / "boxit-london.yaml"
    (folder / "boxit-london.yaml").write_text(source.read_text())
    mail = folder / "boxit-london" / "templates" / "storage" / "booking.cancelled" / "en"
    mail.mkdir(parents=True)
    for part in PARTS:
        (mail / part).write_text(BROKEN if part == "subject.txt" else "{{ unit_name }}")
    return folder


def test_a_tenant_template_that_fails_at_render_time_dead_letters_only_its_mail(deployment: Deployment, tmp_path: Path) -> None:
    cli.publish([_tenant_with_broken_override(tmp_path / "tenants")], deployment.settings)
    deployment.start_worker()

    def person(tag: str):  # type: ignore[no-untyped-def]
        return lambda path, p: {**p, "email": deployment.email(tag), "locale": "en"}

    broken = sample_event(CATALOG.samples, CANCELLED, "boxit-london", recipient=person("broken"))
    fine_other_tenant = sample_event(CATALOG.samples, CANCELLED, "lagerhaus-nord", recipient=person("other"))
    fine_other_trigger = booking_created("boxit-london", 5, email=deployment.email("created"))
    for type_name, event in ((CANCELLED, broken), (CANCELLED, fine_other_tenant), (BOOKING_CREATED, fine_other_trigger)):
        deployment.publisher.publish(deployment.topics.for_event(type_name), type_name, event, key=event["booking_id"])
    deployment.publisher.flush()

    (dead,) = deployment.read_topic(deployment.topics.dead_letter, 1)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert (headers["tidings.stage"], headers["tidings.reason"]) == ("render", "render_failed")
    assert "ZeroDivisionError" in headers["tidings.detail"]
    assert headers["tidings.message_id"]
    assert dead.key().decode() == broken["booking_id"]

    mails = deployment.wait_for_mails(2)
    assert sorted(m.destinations[0] for m in mails) == sorted([deployment.email("other"), deployment.email("created")])
    other = next(m for m in mails if m.destinations[0] == deployment.email("other"))
    assert other.subject.startswith("Cancellation confirmed")  # lagerhaus-nord's own (working) override
