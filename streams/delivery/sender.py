"""The narrow interface to an email provider, its SES implementation, and a recording twin.

``EmailSender.send`` takes a raw MIME message and returns the provider's message id, or raises
``RetryableDelivery`` (try the same mail again later) or ``PermanentDelivery`` (never will be
accepted). The classification of SES errors lives here, at the boundary, and nowhere else.

boto3's own retries are off: botocore retries read timeouts, which resends a mail SES may already
have accepted. The delivery agent decides about retries itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.errors import PermanentDelivery, RetryableDelivery
from streams.settings import Settings

# SES error codes, grouped by what the sender should do about them.
RETRYABLE_CODES = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
    "InternalFailure", "InternalServerError", "ServiceUnavailable", "ServiceUnavailableException",
    # Account-level stops: retrying with backoff holds the backlog until an operator fixes it.
    "AccountSuspendedException", "SendingPausedException",
})
PERMANENT_CODES = frozenset({
    "MessageRejected", "BadRequestException", "MailFromDomainNotVerifiedException", "NotFoundException",
    "InvalidParameterValue", "ValidationError",
})


def classify_ses_error(code: str, status: int) -> RetryableDelivery | PermanentDelivery:
    """What an SES error answer means for this mail: retry it later, or never."""
    if code in PERMANENT_CODES:
        return PermanentDelivery(f"ses:{code}")
    if code in RETRYABLE_CODES or status >= 500 or status == 429:
        return RetryableDelivery(f"ses:{code}")
    # An unknown 4xx says the request itself is wrong; resending it unchanged cannot help.
    return PermanentDelivery(f"ses:{code}")


class EmailSender(Protocol):
    async def send(
        self, *, from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None = None
    ) -> str: ...


class SesSender:
    """Amazon SES v2 ``SendEmail`` with raw content, on a worker thread (boto3 is blocking)."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self._client: Any = boto3.client(
            "sesv2",
            endpoint_url=settings.ses_endpoint_url,
            region_name=settings.aws_region,
            aws_access_key_id=settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None,
            aws_secret_access_key=(
                settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
            ),
            config=Config(
                retries={"total_max_attempts": 1},
                connect_timeout=settings.ses_timeout_seconds,
                read_timeout=settings.ses_timeout_seconds,
            ),
        )

    async def send(
        self, *, from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None = None
    ) -> str:
        return await asyncio.to_thread(self._send, from_address, to_address, raw, tags, configuration_set)

    def _send(
        self, from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None
    ) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"ConfigurationSetName": configuration_set} if configuration_set else {}
        try:
            response = self._client.send_email(
                FromEmailAddress=from_address,
                Destination={"ToAddresses": [to_address]},
                Content={"Raw": {"Data": raw}},
                EmailTags=[{"Name": k, "Value": v} for k, v in tags.items()],
                **extra,
            )
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "Unknown")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise classify_ses_error(code, status) from e
        except BotoCoreError as e:  # connection refused, timeouts: nothing definite came back
            raise RetryableDelivery(f"transport:{type(e).__name__}") from e
        return str(response["MessageId"])


@dataclass
class RecordingSender:
    """Keeps every mail in memory; the twin for agent tests and dry runs."""

    sent: list[dict[str, Any]] = field(default_factory=list)

    async def send(
        self, *, from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None = None
    ) -> str:
        self.sent.append({"from": from_address, "to": to_address, "raw": raw, "tags": tags, "configuration_set": configuration_set})
        return f"recorded-{len(self.sent)}"


def create_sender(settings: Settings) -> EmailSender:
    return SesSender(settings)
