"""Mail loads for the delivery fault tests and the sender benchmark, and how to count what arrived.

``Tally`` is the figure the fault tests report: of the mails expected, how many arrived (sent),
how many arrived more than once (duplicates, counting every extra copy) and how many never did (lost).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from tests.integration.harness import Deployment

PASSWORD_RESET = "tidings.storage.PasswordResetRequested"
TENANT = "lagerhaus-nord"


def publish_bookings(dep: Deployment, numbers: Iterable[int], *, tag: str = "b") -> set[str]:
    """One booking.created mail (normal lane) per number; returns the recipients."""
    topic = dep.topics.for_event(BOOKING_CREATED)
    recipients = set()
    for n in numbers:
        email = dep.email(f"{tag}{n}")
        event = booking_created(TENANT, n, email=email, booking_id=f"{tag}-{dep.run}-{n}")
        dep.publisher.publish(topic, BOOKING_CREATED, event, key=event["booking_id"])
        recipients.add(email)
    dep.publisher.flush()
    return recipients


def publish_password_resets(dep: Deployment, numbers: Iterable[int], *, tag: str = "pw") -> set[str]:
    """One customer.password_reset mail (high lane) per number; returns the recipients."""
    samples = Catalog.load().samples
    topic = dep.topics.for_event(PASSWORD_RESET)
    recipients = set()
    for n in numbers:
        email = dep.email(f"{tag}{n}")
        event = sample_event(samples, PASSWORD_RESET, TENANT, recipient=lambda path, p, email=email: {**p, "email": email})
        event["customer_id"] = f"{tag}-{dep.run}-{n}"
        dep.publisher.publish(topic, PASSWORD_RESET, event, key=event["customer_id"])
        recipients.add(email)
    dep.publisher.flush()
    return recipients


@dataclass(frozen=True)
class Tally:
    expected: int
    sent: int
    duplicates: int
    lost: int

    def __str__(self) -> str:
        return f"expected {self.expected}: sent {self.sent}, duplicates {self.duplicates}, lost {self.lost}"


def tally(dep: Deployment, expected: set[str]) -> Tally:
    per_recipient = collections.Counter(m.destinations[0] for m in dep.my_mails() if m.destinations[0] in expected)
    return Tally(
        expected=len(expected),
        sent=len(per_recipient),
        duplicates=sum(c - 1 for c in per_recipient.values()),
        lost=len(expected - set(per_recipient)),
    )


def wait_arrived(dep: Deployment, expected: set[str], at_least: int, timeout: float = 120.0) -> None:
    """Until at least ``at_least`` of ``expected`` have a mail."""
    dep.wait_for(
        lambda: f"{at_least} of {len(expected)} mails arrived",
        lambda: tally(dep, expected).sent >= at_least,
        timeout,
    )
