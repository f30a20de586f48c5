"""Invoice PDFs come from the object store at send time; a missing one fails only its own mail."""

from __future__ import annotations

import uuid

from deploy.local.samples import tiny_pdf
from deploy.local.ses_emulator import put_object
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from tests.integration.harness import Deployment

CATALOG = Catalog.load()
INVOICE = "tidings.charging.MspInvoiceReady"


def test_the_pdf_is_attached_and_a_missing_pdf_dead_letters_only_that_mail(deployment: Deployment) -> None:
    topic = deployment.topics.for_event(INVOICE)
    present_uri = f"s3://tidings-invoices/{deployment.run}/present.pdf"
    pdf = tiny_pdf(f"invoice {uuid.uuid4()}") * 50  # some kilobytes, so base64 lines wrap
    put_object(deployment.ses_endpoint, present_uri, pdf)

    def invoice(tag: str, uri: str) -> dict:  # type: ignore[type-arg]
        event = sample_event(
            CATALOG.samples, INVOICE, "voltpark-nl", recipient=lambda path, p: {**p, "email": deployment.email(tag)}
        )
        event["invoice_id"] = f"INV-{tag}"
        event["pdf_uri"] = uri
        return event

    deployment.start_worker()
    for tag, uri in (("missing", f"s3://tidings-invoices/{deployment.run}/never-uploaded.pdf"), ("present", present_uri)):
        event = invoice(tag, uri)
        deployment.publisher.publish(topic, INVOICE, event, key=event["invoice_id"])
    deployment.publisher.flush()

    (mail,) = deployment.wait_for_mails(1)
    assert mail.destinations[0] == deployment.email("present")
    ((filename, data),) = mail.attachments()
    assert data == pdf
    assert filename == f"invoice-{invoice('x', '')['invoice_number']}.pdf"

    (dead,) = deployment.read_topic(deployment.topics.dead_letter, 1)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert (headers["tidings.stage"], headers["tidings.reason"]) == ("deliver", "attachment_missing")
    assert headers["tidings.source.topic"] == deployment.topics.outbound
