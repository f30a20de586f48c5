"""Producing services can follow their mails on the delivery-status topic.

By default a mail's first status is its outcome; ``TIDINGS_QUEUED_STATUS=on`` adds a QUEUED status
when the mail is rendered onto the outbound topic. A worker that compresses what it writes otherwise
than by default (``TIDINGS_PRODUCER_COMPRESSION``) reports the same.
"""

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
CODEC = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))


def _publish_three_bookings_and_an_invoice_without_its_pdf(deployment: Deployment) -> None:
    for n in range(3):
        event = booking_created("boxit-london", n, email=deployment.email(n))
        deployment.publisher.publish(deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event, key=event["booking_id"])
    invoice = sample_event(Catalog.load().samples, INVOICE, "voltpark-nl",
                           recipient=lambda path, p: {**p, "email": deployment.email("invoice")})
    invoice["invoice_id"], invoice["pdf_uri"] = f"INV-{deployment.run}", f"s3://tidings-invoices/{deployment.run}/absent.pdf"
    deployment.publisher.publish(deployment.topics.for_event(INVOICE), INVOICE, invoice, key=invoice["invoice_id"])
    deployment.publisher.flush()


def _histories(deployment: Deployment, records: int) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    """Each message id's status records, in the order they were written (one partition per id)."""
    history: dict[str, list[dict]] = collections.defaultdict(list)  # type: ignore[type-arg]
    for msg in sorted(deployment.read_topic(deployment.topics.delivery_status, records), key=lambda m: (m.partition(), m.offset())):
        status = CODEC.decode(msg.value()).record
        assert msg.key().decode() == status["message_id"]
        history[status["message_id"]].append(status)
    return history


def _assert_outcomes(deployment: Deployment, history: dict[str, list[dict]]) -> None:  # type: ignore[type-arg]
    mails = {m.message_id.strip("<>").split("@")[0]: m for m in deployment.wait_for_mails(3)}
    for message_id, statuses in history.items():
        last = statuses[-1]
        if last["status"] == "SENT":
            assert message_id in mails and last["provider_message_id"] == mails[message_id].ses_id
        else:
            assert (last["trigger"], last["reason"]) == ("invoice.msp_ready", "attachment_missing")
        assert statuses[0]["at"] <= last["at"]


def test_every_mail_reports_its_outcome_once_and_nothing_before_it_by_default(deployment: Deployment) -> None:
    deployment.start_worker()
    _publish_three_bookings_and_an_invoice_without_its_pdf(deployment)
    history = _histories(deployment, 4)
    # A QUEUED status would be on its mail's partition before the outcome, in an earlier transaction:
    # a read that holds the outcome holds it too.
    outcomes = collections.Counter(tuple(s["status"] for s in h) for h in history.values())
    assert outcomes == {("SENT",): 3, ("FAILED",): 1}
    _assert_outcomes(deployment, history)


def test_with_queued_status_on_every_mail_reports_queued_then_sent_or_failed(deployment: Deployment) -> None:
    deployment.start_worker(TIDINGS_QUEUED_STATUS="on")
    _publish_three_bookings_and_an_invoice_without_its_pdf(deployment)
    history = _histories(deployment, 8)
    assert len(history) == 4
    outcomes = collections.Counter(tuple(s["status"] for s in h) for h in history.values())
    assert outcomes == {("QUEUED", "SENT"): 3, ("QUEUED", "FAILED"): 1}
    _assert_outcomes(deployment, history)


def test_a_worker_that_compresses_with_zstd_reports_and_sends_the_same(deployment: Deployment) -> None:
    # Every other test runs the default, lz4. Here mails, statuses and table rows go out as zstd
    # record batches: its own sender, its tables' changelogs and the producing services' readers
    # (confluent-kafka here) all read them.
    deployment.start_worker(TIDINGS_PRODUCER_COMPRESSION="zstd")
    _publish_three_bookings_and_an_invoice_without_its_pdf(deployment)
    history = _histories(deployment, 4)
    outcomes = collections.Counter(tuple(s["status"] for s in h) for h in history.values())
    assert outcomes == {("SENT",): 3, ("FAILED",): 1}
    _assert_outcomes(deployment, history)
