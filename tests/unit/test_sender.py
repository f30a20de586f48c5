from __future__ import annotations

import pytest

from streams.delivery.sender import classify_ses_error
from streams.errors import PermanentDelivery, RetryableDelivery, SendingBlocked


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("TooManyRequestsException", 429, RetryableDelivery),
        ("Throttling", 400, RetryableDelivery),
        ("InternalFailure", 500, RetryableDelivery),
        ("SomethingNew", 503, RetryableDelivery),
        ("SendingPausedException", 400, SendingBlocked),
        ("AccountSuspendedException", 400, SendingBlocked),
        ("MailFromDomainNotVerifiedException", 400, SendingBlocked),
        ("MessageRejected", 400, PermanentDelivery),
        ("BadRequestException", 400, PermanentDelivery),
        ("SomethingNew", 400, PermanentDelivery),
    ],
)
def test_ses_errors_are_classified(code: str, status: int, kind: type) -> None:
    error = classify_ses_error(code, status)
    assert type(error) is kind
    assert code in str(error)


def test_an_unverified_sender_identity_blocks_sending_while_other_rejections_are_permanent() -> None:
    assert type(classify_ses_error("MessageRejected", 400, "Email address is not verified: a@b.example")) is SendingBlocked
    assert type(classify_ses_error("MessageRejected", 400, "Message contains a virus")) is PermanentDelivery


def _held_departures(gap: float, dues: list[float]) -> list[float]:
    """When the wire gate lets requests with these due instants go, one after another on one thread."""
    import time

    from streams.delivery.sender import SesSender
    from streams.settings import Settings

    sender = SesSender(Settings(ses_endpoint_url="http://127.0.0.1:9", aws_region="eu-central-1"))  # never called
    departures = []
    for due in dues:
        sender._due.at, sender._due.gap = due, gap
        sender._hold_until_due()
        departures.append(time.monotonic())
    return departures


def test_the_wire_gate_holds_a_request_until_it_is_due() -> None:
    import time

    due = time.monotonic() + 0.05
    (left,) = _held_departures(0.0, [due])
    assert left >= due


def test_the_wire_gate_spaces_requests_that_reach_it_late_and_bunched() -> None:
    # Three requests due long ago (a slow first connection, a busy thread) leave a gap apart, not at once.
    import time

    from streams.delivery.pacing import OVERSLEEP_TOLERANCE_SECONDS as catch_up

    past = time.monotonic() - 1.0
    first, second, third = _held_departures(0.04, [past, past + 0.001, past + 0.002])
    assert second - first >= 0.04 - catch_up - 1e-3 and third - second >= 0.04 - catch_up - 1e-3


def test_the_lean_client_is_the_default_and_boto3_stays_available() -> None:
    from pydantic import SecretStr

    from streams.delivery.sender import SesSender, create_sender
    from streams.delivery.sesv2 import LeanSesSender
    from streams.settings import Settings

    keys = {"aws_access_key_id": SecretStr("a"), "aws_secret_access_key": SecretStr("b")}
    assert type(create_sender(Settings(**keys))) is LeanSesSender
    boto = create_sender(Settings(ses_client="boto3", **keys))
    assert type(boto) is SesSender
    boto._client.close()
    boto._threads.shutdown()
