from __future__ import annotations

import asyncio
import email
import email.policy

import pytest

from streams.delivery.attachments import MemoryAttachmentStore, split_uri
from streams.delivery.mime import build_mime
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.domain.tenants import TenantDirectory
from streams.errors import PermanentDelivery, RenderFailed
from streams.rendering.render import Renderer, Source
from tests.unit.conftest import NOW
from tests.unit.test_mime import MAIL

CATALOG = Catalog.load()
INVOICE = "tidings.charging.MspInvoiceReady"


def _render(renderer: Renderer, tenants: TenantDirectory, **changes: object) -> dict:  # type: ignore[type-arg]
    tenant = tenants.get("voltpark-nl")
    assert tenant is not None
    event = {**sample_event(CATALOG.samples, INVOICE, tenant.tenant_id, now=NOW), **changes}
    (firing,) = event_firings(INVOICE, event, CATALOG, tenant)
    return renderer.render(firing, tenant, event, Source("t", "e", NOW), NOW).record


def test_invoice_mail_references_its_pdf(renderer: Renderer, tenants: TenantDirectory) -> None:
    mail = _render(renderer, tenants, invoice_number="2026-000042", pdf_uri="s3://bucket/2026/42.pdf")
    assert mail["attachments"] == [
        {"uri": "s3://bucket/2026/42.pdf", "filename": "invoice-2026-000042.pdf", "content_type": "application/pdf"}
    ]


def test_a_file_name_cannot_carry_a_path(renderer: Renderer, tenants: TenantDirectory) -> None:
    mail = _render(renderer, tenants, invoice_number="../../etc/passwd", pdf_uri="s3://bucket/k.pdf")
    assert "/" not in mail["attachments"][0]["filename"]


def test_an_attachment_that_is_not_an_s3_uri_fails_the_mail(renderer: Renderer, tenants: TenantDirectory) -> None:
    with pytest.raises(RenderFailed, match="s3://"):
        _render(renderer, tenants, pdf_uri="file:///etc/passwd")


def test_the_pdf_is_a_real_mime_attachment() -> None:
    attachment = {"uri": "s3://b/k.pdf", "filename": "invoice-1.pdf", "content_type": "application/pdf"}
    raw = build_mime(MAIL, [(attachment, b"%PDF-1.4 fake")])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    (part,) = list(msg.iter_attachments())
    assert part.get_filename() == "invoice-1.pdf"
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == b"%PDF-1.4 fake"
    assert msg.get_body(("plain",)).get_content().strip() == "Hallo"


def test_store_errors_say_what_to_do() -> None:
    store = MemoryAttachmentStore({"s3://b/k": b"x"})
    assert asyncio.run(store.fetch("s3://b/k")) == b"x"
    with pytest.raises(PermanentDelivery, match="attachment_missing"):
        asyncio.run(store.fetch("s3://b/other"))
    for bad in ("https://x/y", "s3://bucket-only", "s3:///key"):
        with pytest.raises(PermanentDelivery, match="attachment_unsupported"):
            split_uri(bad)
