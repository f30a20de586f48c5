from __future__ import annotations

import pytest

from streams.delivery.sender import classify_ses_error
from streams.errors import PermanentDelivery, RetryableDelivery


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("TooManyRequestsException", 429, RetryableDelivery),
        ("Throttling", 400, RetryableDelivery),
        ("InternalFailure", 500, RetryableDelivery),
        ("SomethingNew", 503, RetryableDelivery),
        ("SendingPausedException", 400, RetryableDelivery),
        ("MessageRejected", 400, PermanentDelivery),
        ("BadRequestException", 400, PermanentDelivery),
        ("SomethingNew", 400, PermanentDelivery),
    ],
)
def test_ses_errors_are_classified(code: str, status: int, kind: type) -> None:
    error = classify_ses_error(code, status)
    assert type(error) is kind
    assert code in str(error)
