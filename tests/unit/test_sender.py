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
