"""Producing services can follow their mails on the delivery-status topic."""

from __future__ import annotations

import collections

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.settings import REPO_ROOT
from tests.integration.harness import Deployment

INVOICE = "tidings.charging.MspInvoiceReady"


def test_every_mail_reports_queued_then_sent_or_failed(deployment: Deployment) -> None:
    codec = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))
    deployment.start_worker()
    for n in range(3):
        event = booking_created("boxit-london", n, email=deployment.email(n))
        deployment.publisher.publish(deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event, key=event["booking_id"])
    invoice = sample_event(Catalog.load().samples, INVOICE, "voltpark-nl",
                           recipient=lambda path, p: {**p, "email": deployment.email("invoice")})
    invoice["invoice_id"], invoice["pdf_uri"] = f"INV-{deployment.run}", f"s3://tidings-invoices/{deployment.run}/absent.pdf"
    deployment.publisher.publish(deployment.topics.for_event(INVOICE), INVOICE, invoice, key=invoice["invoice_id"])
    deployment.publisher.flush()

    records = deployment.read_topic(deployment.topics.delivery_status, 8)
    history: dict[str, list[dict]] = collections.defaultdict(list)  # type: ignore[type-arg]
    for msg in sorted(records, key=lambda m: (m.partition(), m.offset())):
        status = codec.decode(msg.value()).record
        assert msg.key().decode() == status["message_id"]
        history[status["message_id"]].append(status)
    assert len(history) == 4
    outcomes = collections.Counter(tuple(s["status"] for s in h) for h in history.values())
    assert outcomes == {("QUEUED", "SENT"): 3, ("QUEUED", "FAILED"): 1}
    mails = {m.message_id.strip("<>").split("@")[0]: m for m in deployment.wait_for_mails(3)}
    for message_id, (queued, last) in history.items():
        if last["status"] == "SENT":
            assert message_id in mails and last["provider_message_id"] == mails[message_id].ses_id
        else:
            assert (last["trigger"], last["reason"]) == ("invoice.msp_ready", "attachment_missing")
        assert queued["at"] <= last["at"]
