"""Shared by the sender benchmark and the stand-in's parity test: real rendered mails, and counting sends.

``MailFactory`` renders two real triggers once and copies them with fresh ids and recipients, so a
benchmark's mails have the size and shape of production mail without rendering each one.

The worker's own counter (``tidings_emails_sent_total`` on ``/metrics``) is polled while waiting:
it is one small HTTP page. The SES emulator's ``/moto-api/data.json`` is the ground truth but
lists every mail ever sent with its full MIME body and gets slow as it grows, so it is read once,
at the end, and only counted (no MIME parsing). The stand-in (``deploy/sesstub``) keeps only
arrival times and recipients and is read with ``SesStub.stats()``.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from typing import Any

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.domain.tenants import TenantDirectory
from streams.rendering.render import Renderer, Source
from streams.settings import REPO_ROOT

TENANT = "lagerhaus-nord"
SCHEMA = "tidings.outbound.RenderedEmail"


class MailFactory:
    """Rendered mails of two real triggers, copied with fresh ids and recipients."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.codec = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))
        catalog, renderer = Catalog.load(), Renderer(REPO_ROOT / "templates")
        tenant = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants").get(TENANT)
        assert tenant is not None
        now = dt.datetime.now(dt.timezone.utc)

        def render(event_type: str) -> dict[str, Any]:
            event = sample_event(catalog.samples, event_type, TENANT, now=now)
            firing = next(iter(event_firings(event_type, event, catalog, tenant)))
            return renderer.render(firing, tenant, event, Source("bench", "bench", now), now).record

        self.normal = render("tidings.storage.BookingCreated")
        self.high = render("tidings.storage.PasswordResetRequested")

    def mail(self, n: int, *, high: bool = False) -> dict[str, Any]:
        base = self.high if high else self.normal
        tag = "pw" if high else "s"
        return {
            **base,
            "message_id": f"bench-{self.run}-{tag}{n}",
            "to_address": f"{tag}{n}.{self.run}@example.org",
            "created_at": dt.datetime.now(dt.timezone.utc),
        }

    def encode(self, n: int, *, high: bool = False) -> tuple[str, bytes]:
        mail = self.mail(n, high=high)
        return mail["message_id"], self.codec.encode(SCHEMA, mail)


def emails_sent(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    return int(sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("tidings_emails_sent_total{")
    ))


def mails_in_emulator(endpoint: str, address_marker: str) -> int:
    """Mails in the emulator with a recipient address containing ``address_marker``."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=60) as response:
        data = json.load(response)
    raw = data.get("ses", {}).get("RawMessage", [])
    return sum(1 for m in raw if any(address_marker in d for d in m.get("destinations", [])))
