"""booking.created from a producing service to the SES emulator, on the real broker."""

from __future__ import annotations

import collections
import urllib.request

from deploy.local.samples import BOOKING_CREATED, booking_created
from tests.integration.harness import Deployment

# (tenant, recipient locale) -> (language the mail must be in, subject it must have)
CASES = [
    ("lagerhaus-nord", "de-AT", "de", "Ihre Buchung bei Hamburg Hafencity ist bestätigt"),
    ("lagerhaus-nord", "en-GB", "en", "Your booking at Hamburg Hafencity is confirmed"),
    ("lagerhaus-nord", "fr", "de", "Ihre Buchung bei Hamburg Hafencity ist bestätigt"),  # not offered: tenant default
    ("lagerhaus-nord", None, "de", "Ihre Buchung bei Hamburg Hafencity ist bestätigt"),
    ("boxit-london", "de", "en", "Your booking at BoxIt Islington is confirmed"),  # tenant offers English only
    ("boxit-london", "en", "en", "Your booking at BoxIt Islington is confirmed"),
]


def test_booking_created_is_delivered_once_in_the_customers_language(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    topic = deployment.topics.for_event(BOOKING_CREATED)
    expected = {}
    for n, (tenant, locale, language, subject) in enumerate(CASES):
        event = booking_created(tenant, n, email=deployment.email(n), locale=locale)
        deployment.publisher.publish(topic, BOOKING_CREATED, event, key=event["booking_id"])
        expected[deployment.email(n)] = (tenant, language, subject, event)
    deployment.publisher.flush()

    mails = deployment.wait_for_mails(len(CASES))

    by_recipient = {m.destinations[0]: m for m in mails}
    assert set(by_recipient) == set(expected)
    for address, (tenant, language, subject, event) in expected.items():
        mail = by_recipient[address]
        assert mail.subject == subject
        assert mail.header("Content-Language") == language
        assert mail.header("X-Tidings-Tenant") == tenant
        assert mail.header("X-Tidings-Trigger") == "storage/booking.created"
        assert event["customer"]["name"] in mail.to
        assert event["booking_id"] in mail.part("html")
        assert event["booking_id"] in mail.part("plain")
        assert event["unit_name"] in mail.part("plain")
    assert [mid for mid, n in collections.Counter(m.message_id for m in mails).items() if n > 1] == []

    metrics = urllib.request.urlopen(worker.metrics_url, timeout=5).read().decode()
    sent = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tidings_emails_sent_total{")
    )
    assert sent == len(CASES)
    assert "tidings_event_to_sent_seconds_count" in metrics
