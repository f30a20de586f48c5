"""The narrow interface to an email provider, its SES implementations, and a recording twin.

``EmailSender.send`` takes a raw MIME message and returns the provider's message id, or raises
``RetryableDelivery`` (not sent; try the same mail again later), ``SendingBlocked`` (not sent;
nothing will be until an operator acts), ``OutcomeUnknown`` (no answer: it may have been sent) or
``PermanentDelivery`` (never will be accepted). The classification of SES errors lives here, at the boundary, and nowhere else.

Two SES clients implement it, chosen by ``TIDINGS_SES_CLIENT`` in ``create_sender``: the lean one
(``streams/delivery/sesv2.py``, the default: SigV4 and one aiohttp request per mail on the event
loop) and ``SesSender`` here (boto3 on threads, kept as the reference the lean one is checked
against). Both classify errors with ``classify_ses_error`` and hold a request until its paced moment.

boto3's own retries are off: botocore retries read timeouts, which resends a mail SES may already
have accepted. The delivery agent decides about retries itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.delivery.pacing import BUCKET_BOUND, WireGate, WireShape
from streams.errors import DeliveryError, OutcomeUnknown, PermanentDelivery, RetryableDelivery, SendingBlocked
from streams.settings import Settings

# SES error codes, grouped by what the sender should do about them.
RETRYABLE_CODES = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
    "InternalFailure", "InternalServerError", "ServiceUnavailable", "ServiceUnavailableException",
})
# Nothing will be sent until an operator acts; every mail would fail the same way, so the sender
# holds its backlog (and raises the blocked gauge) instead of dead-lettering it.
BLOCKING_CODES = frozenset({
    "AccountSuspendedException", "SendingPausedException", "MailFromDomainNotVerifiedException",
})
PERMANENT_CODES = frozenset({
    "MessageRejected", "BadRequestException", "NotFoundException", "InvalidParameterValue", "ValidationError",
})


def classify_ses_error(code: str, status: int, message: str = "") -> DeliveryError:
    """What an SES error answer means for this mail: retry it later, hold everything, or never."""
    if code in BLOCKING_CODES or (code == "MessageRejected" and "not verified" in message.lower()):
        # SES answers an unverified sender identity with MessageRejected "Email address is not verified".
        return SendingBlocked(f"ses:{code}")
    if code in PERMANENT_CODES:
        return PermanentDelivery(f"ses:{code}")
    if code in RETRYABLE_CODES or status >= 500 or status == 429:
        return RetryableDelivery(f"ses:{code}")
    # An unknown 4xx says the request itself is wrong; resending it unchanged cannot help.
    return PermanentDelivery(f"ses:{code}")


class EmailSender(Protocol):
    # How its requests reach SES, which shapes the pacing in front of it (pacing.WireShape).
    wire: WireShape

    async def send(
        self, *, from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None = None,
        not_before: float | None = None, gap: float = 0.0, gate: WireGate | None = None,
    ) -> str:
        """``not_before``: a ``time.monotonic()`` instant the request must not leave before,
        ``gap``: seconds it must leave after the previous request at least, and ``gate``: the
        bound on requests in any second, passed as close to the write as the client can (pacing)."""


class SesSender:
    """Amazon SES v2 ``SendEmail`` with raw content, on a worker thread (boto3 is blocking)."""

    wire = BUCKET_BOUND  # a thread writes after the gate: the bucket alone must hold the quota

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        # Its own threads and connections, one per request in flight: asyncio's default executor
        # has min(32, cores + 4) threads (6 here) and botocore pools 10 connections, either of
        # which would cap the sender far below TIDINGS_SENDER_CONCURRENCY.
        self._threads = concurrent.futures.ThreadPoolExecutor(settings.sender_in_flight, thread_name_prefix="ses")

        self._due = threading.local()  # per SES thread: when its current request may leave
        self._client: Any = boto3.client(
            "sesv2",
            endpoint_url=settings.ses_endpoint_url,
            region_name=settings.aws_region,
            aws_access_key_id=settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None,
            aws_secret_access_key=(
                settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
            ),
            config=Config(
                max_pool_connections=settings.sender_in_flight,
                retries={"total_max_attempts": 1},
                connect_timeout=settings.ses_timeout_seconds,
                read_timeout=settings.ses_timeout_seconds,
            ),
        )
        # The pacer grants each send a moment a little ahead (streams/delivery/pacing.py); the
        # request waits for it here, after botocore has built and signed it, just before it goes
        # on the wire, and at least ``gap`` after the request before it. What happens between the
        # grant and this point (a thread to pick the call up, a first connection, botocore's work
        # under a contended GIL) then no longer bunches requests at SES.
        self._wire = threading.Lock()
        self._last_out = float("-inf")
        self._client.meta.events.register("before-send.sesv2.SendEmail", self._hold_until_due)

    def _hold_until_due(self, **kwargs: Any) -> None:
        due, gap = getattr(self._due, "at", None), getattr(self._due, "gap", 0.0)
        if due is None:
            return None
        with self._wire:
            now = time.monotonic()
            # ``gap`` after the previous one's slot, but a slot may be up to the wire's catch-up
            # (the pacer's oversleep tolerance) in the past: a request that was late catches up
            # that much, no more, so the wire is a token bucket of the pacer's shape (pacing.ses_shape).
            out = self._last_out = max(due, self._last_out + gap, now - self.wire.catch_up)
        if out > now:
            time.sleep(out - now)
        return None  # botocore sends the request itself

    async def send(
        self, *, from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None = None,
        not_before: float | None = None, gap: float = 0.0, gate: WireGate | None = None,
    ) -> str:
        if gate is not None:
            # botocore writes on a thread, out of the event loop's reach: admitted before the
            # hand-over, so a late thread can still bunch requests (the lean client has no such gap).
            await gate.admit()
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self._send, from_address, to_address, raw, tags, configuration_set, not_before, gap
        )

    async def account(self) -> dict[str, Any]:
        """SES v2 ``GetAccount``: the send quota and sending state (``streams/delivery/quota.py``)."""
        from botocore.exceptions import ClientError

        def get() -> dict[str, Any]:
            try:
                return dict(self._client.get_account())
            except ClientError as e:
                error = e.response.get("Error", {})
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                raise classify_ses_error(error.get("Code", "Unknown"), status, error.get("Message", "")) from e

        return await asyncio.get_running_loop().run_in_executor(self._threads, get)

    def _send(
        self, from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None,
        not_before: float | None = None, gap: float = 0.0,
    ) -> str:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

        extra = {"ConfigurationSetName": configuration_set} if configuration_set else {}
        self._due.at, self._due.gap = not_before, gap
        try:
            response = self._client.send_email(
                FromEmailAddress=from_address,
                Destination={"ToAddresses": [to_address]},
                Content={"Raw": {"Data": raw}},
                EmailTags=[{"Name": k, "Value": v} for k, v in tags.items()],
                **extra,
            )
        except ClientError as e:
            error = e.response.get("Error", {})
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise classify_ses_error(error.get("Code", "Unknown"), status, error.get("Message", "")) from e
        except (ConnectTimeoutError, EndpointConnectionError) as e:  # never reached SES: nothing was sent
            raise RetryableDelivery(f"transport:{type(e).__name__}") from e
        except BotoCoreError as e:  # read timeout, connection dropped: SES may have accepted it
            raise OutcomeUnknown(f"transport:{type(e).__name__}") from e
        finally:
            self._due.at = None
        return str(response["MessageId"])


@dataclass
class RecordingSender:
    """Keeps every mail in memory; the twin for agent tests and dry runs."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    wire: WireShape = BUCKET_BOUND

    async def send(
        self, *, from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None = None,
        not_before: float | None = None, gap: float = 0.0, gate: WireGate | None = None,
    ) -> str:
        self.sent.append({"from": from_address, "to": to_address, "raw": raw, "tags": tags, "configuration_set": configuration_set})
        return f"recorded-{len(self.sent)}"


def create_sender(settings: Settings) -> EmailSender:
    """The SES client ``TIDINGS_SES_CLIENT`` names: the lean one (the default) or boto3's."""
    if settings.ses_client == "boto3":
        return SesSender(settings)
    from streams.delivery.sesv2 import LeanSesSender  # imports this module: imported here, not at the top

    return LeanSesSender(settings)
