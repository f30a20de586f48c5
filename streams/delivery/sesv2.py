"""A lean SES v2 client for the sender: ``SendEmail`` with raw content, signed here, over pooled aiohttp.

Why not boto3: per mail, botocore builds a request from the service model, validates and
serializes the parameters, runs its event hooks, signs, sends through urllib3 on a worker thread,
and parses the answer with the model again: about 1.5 ms of CPU, a quarter of the worker's per-mail
cost. The sender needs exactly one request shape, so this module writes it out:

    POST /v2/email/outbound-emails        (REST-JSON, the same document botocore serializes)
    {"FromEmailAddress": ..., "Destination": {"ToAddresses": [...]}, "Content": {"Raw": {"Data": <base64>}},
     "EmailTags": [...], "ConfigurationSetName": ...}

and signs it with AWS Signature Version 4 directly (hashlib/hmac; the signing key is derived once
a day per region and secret). ``tests/unit/test_sesv2.py`` checks the signature is byte for byte
the one botocore's ``SigV4Auth`` computes for the same request and instant, and
``tests/integration/test_sesstub_parity.py`` that moto and the benchmark's stand-in
(``deploy/sesstub``) accept the same requests from it.

What it keeps from ``SesSender`` (``streams/delivery/sender.py``), so the two are interchangeable
behind ``EmailSender``:

- credentials: the settings' key pair if set, else botocore's normal chain (environment, shared
  files, container and instance roles), refreshed by botocore when they expire;
- errors: SES's error code (the ``x-amzn-ErrorType`` header) goes through ``classify_ses_error``;
  a connection that could not be made (refused, connect timeout) is retryable, nothing left;
  a request that left and got no answer (read timeout, dropped connection) is ``OutcomeUnknown``.
  No retries of its own: a resent request may send a mail twice; the delivery agent decides;
- pacing: the request is signed first, then held until its granted moment ``not_before`` and at
  least ``gap`` after the previous request (late ones catching up at most the wire's
  ``catch_up``, ``pacing.WRITE_GATED``), then handed to aiohttp. aiohttp writes the body from a
  task of its own (on Python 3.11; 3.12 starts it eagerly), which a busy loop starts late, so the
  hold spaces requests but cannot bound them. The bound is the ``gate`` (``pacing.WireGate``), admitted in aiohttp's
  ``on_request_chunk_sent`` trace signal: aiohttp awaits that signal immediately before it
  writes the chunk to the transport, so a request is counted at the moment it is written. The
  body is one chunk (bytes); a request is admitted once, at its first.

The aiohttp session belongs to the event loop that made it; a sender used from a new loop (a test
calling ``asyncio.run`` per send) makes a new one. ``close()`` releases the connections.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from streams.delivery.pacing import WRITE_GATED, WireGate
from streams.delivery.sender import classify_ses_error
from streams.errors import OutcomeUnknown, RetryableDelivery, SendingBlocked
from streams.settings import Settings

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

SEND_EMAIL_PATH = "/v2/email/outbound-emails"
ACCOUNT_PATH = "/v2/email/account"  # GetAccount: the quota gauges (streams/delivery/quota.py)
SERVICE = "ses"  # SES v2 signs with the same service name as v1
ALGORITHM = "AWS4-HMAC-SHA256"
USER_AGENT = "tidings-sesv2"


class SigV4Signer:
    """Signature Version 4 for one host, region and service, as botocore's ``SigV4Auth`` computes it."""

    def __init__(self, host: str, region: str, service: str = SERVICE) -> None:
        self.host, self.region, self.service = host, region, service
        self._key_for: tuple[str, str] | None = None  # (secret, date) the cached key was derived for
        self._key = b""

    def _signing_key(self, secret: str, date: str) -> bytes:
        if self._key_for != (secret, date):
            key = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
            for part in (self.region, self.service, "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._key_for, self._key = (secret, date), key
        return self._key

    def headers(
        self, method: str, path: str, body: bytes, *, access_key: str, secret_key: str, token: str | None,
        content_type: str = "application/json", now: dt.datetime | None = None,
    ) -> dict[str, str]:
        """The headers to send, ``Authorization`` included, for a request without a query string."""
        stamp = _amz_date(time.time()) if now is None else now.strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        signed = {"content-type": content_type, "host": self.host, "x-amz-date": stamp}
        if token:
            signed["x-amz-security-token"] = token
        names = ";".join(sorted(signed))
        canonical = "\n".join((
            method, path, "",  # no query string
            "".join(f"{k}:{signed[k]}\n" for k in sorted(signed)), names,
            hashlib.sha256(body).hexdigest(),
        ))
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(secret_key, date), to_sign.encode(), "sha256").hexdigest()
        headers = {
            "Content-Type": content_type, "X-Amz-Date": stamp,
            "Authorization": f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={names}, Signature={signature}",
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers


_stamp_second = -1
_stamp = ""


def _amz_date(now: float) -> str:
    """``now`` as X-Amz-Date (UTC, to the second); formatted once a second, not once a request."""
    global _stamp_second, _stamp
    second = int(now)
    if second != _stamp_second:
        _stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        _stamp_second = second
    return _stamp


def send_email_body(
    from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None
) -> bytes:
    """The JSON document of a raw ``SendEmail``, as botocore's rest-json serializer writes it."""
    document: dict[str, Any] = {
        "FromEmailAddress": from_address,
        "Destination": {"ToAddresses": [to_address]},
        "Content": {"Raw": {"Data": base64.b64encode(raw).decode("ascii")}},
        "EmailTags": [{"Name": k, "Value": v} for k, v in tags.items()],
    }
    if configuration_set:
        document["ConfigurationSetName"] = configuration_set
    return orjson.dumps(document)  # a third of json.dumps's cost for this document


def _endpoint(settings: Settings) -> tuple[str, str]:
    """(base URL, Host header value) of the SES endpoint."""
    url = settings.ses_endpoint_url or f"https://email.{settings.aws_region}.amazonaws.com"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"TIDINGS_SES_ENDPOINT_URL must be scheme://host[:port] with no path, got {url!r}")
    default_port = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname if parts.port in (None, default_port) else f"{parts.hostname}:{parts.port}"
    return f"{parts.scheme}://{parts.netloc}", host


class LeanSesSender:
    """SES v2 ``SendEmail`` (raw) on the event loop: one signed aiohttp request per mail."""

    wire = WRITE_GATED  # every request is counted by the gate at its write (_through_gate)

    def __init__(self, settings: Settings) -> None:
        self._base, host = _endpoint(settings)
        self._url = self._base + SEND_EMAIL_PATH
        self._signer = SigV4Signer(host, settings.aws_region)
        self._concurrency = settings.sender_in_flight
        self._timeout = settings.ses_timeout_seconds
        self._settings = settings
        self._credentials: Any = self._resolve_credentials()
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._last_out = float("-inf")

    def _resolve_credentials(self) -> Any:
        """botocore credentials (static or refreshable), or None when the chain finds none."""
        import botocore.credentials
        import botocore.session

        s = self._settings
        if s.aws_access_key_id and s.aws_secret_access_key:
            return botocore.credentials.Credentials(
                s.aws_access_key_id.get_secret_value(), s.aws_secret_access_key.get_secret_value()
            )
        return botocore.session.get_session().get_credentials()

    def _session_here(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._concurrency, limit_per_host=self._concurrency)
            wire = aiohttp.TraceConfig()
            wire.on_request_chunk_sent.append(_through_gate)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Connect and read bounded separately: which one ran out decides whether SES may have the mail.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=self._timeout),
                skip_auto_headers=("Accept-Encoding",),
                headers={"User-Agent": USER_AGENT},
                trace_configs=[wire],
            )
            self._session_loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = self._session_loop = None

    async def send(
        self, *, from_address: str, to_address: str, raw: bytes, tags: dict[str, str], configuration_set: str | None = None,
        not_before: float | None = None, gap: float = 0.0, gate: WireGate | None = None,
    ) -> str:
        import aiohttp

        if self._credentials is None:
            self._credentials = self._resolve_credentials()
            if self._credentials is None:
                # Every mail would fail the same way until an operator provides credentials.
                log.error("no AWS credentials: set TIDINGS_AWS_ACCESS_KEY_ID and TIDINGS_AWS_SECRET_ACCESS_KEY, "
                          "or provide them through the AWS chain (environment, shared files, instance role)")
                raise SendingBlocked("credentials:none")
        frozen = self._credentials.get_frozen_credentials()
        body = send_email_body(from_address, to_address, raw, tags, configuration_set)
        headers = self._signer.headers(
            "POST", SEND_EMAIL_PATH, body, access_key=frozen.access_key, secret_key=frozen.secret_key, token=frozen.token
        )
        session = self._session_here()
        if not_before is not None:
            await self._hold(not_before, gap)
        try:
            async with session.post(self._url, data=body, headers=headers,
                                    trace_request_ctx=None if gate is None else _Passage(gate)) as response:
                payload = await response.read()
                status = response.status
                error_type = response.headers.get("x-amzn-ErrorType", "")
        except aiohttp.ConnectionTimeoutError as e:  # never connected: nothing was sent
            raise RetryableDelivery(f"transport:{type(e).__name__}") from e
        except aiohttp.ClientConnectorError as e:  # refused, unreachable, no such host: nothing was sent
            raise RetryableDelivery(f"transport:{type(e).__name__}") from e
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:  # it left; no (whole) answer: SES may have it
            raise OutcomeUnknown(f"transport:{type(e).__name__}") from e
        if 200 <= status < 300:
            try:
                return str(orjson.loads(payload)["MessageId"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                # SES answered 2xx, so it took the mail; the id is lost, the outcome is not.
                raise OutcomeUnknown(f"ses:unreadable answer {payload[:200]!r}") from e
        code, message = _error(status, error_type, payload)
        raise classify_ses_error(code, status, message)

    async def account(self) -> dict[str, Any]:
        """SES v2 ``GetAccount``: the send quota and sending state (``streams/delivery/quota.py``)."""
        if self._credentials is None:
            self._credentials = self._resolve_credentials()
            if self._credentials is None:
                raise SendingBlocked("credentials:none")
        frozen = self._credentials.get_frozen_credentials()
        headers = self._signer.headers(
            "GET", ACCOUNT_PATH, b"", access_key=frozen.access_key, secret_key=frozen.secret_key, token=frozen.token
        )
        async with self._session_here().get(self._base + ACCOUNT_PATH, headers=headers) as response:
            payload = await response.read()
            if not 200 <= response.status < 300:
                code, message = _error(response.status, response.headers.get("x-amzn-ErrorType", ""), payload)
                raise classify_ses_error(code, response.status, message)
        document = orjson.loads(payload)
        if not isinstance(document, dict):
            raise ValueError(f"GetAccount answered {payload[:200]!r}")
        return document

    async def _hold(self, due: float, gap: float) -> None:
        now = time.monotonic()
        # ``gap`` after the previous one's slot, but a slot may be up to the wire's catch-up in
        # the past: late requests make up that much at once, no more (pacing.ses_shape).
        out = self._last_out = max(due, self._last_out + gap, now - self.wire.catch_up)
        if out > now:
            await asyncio.sleep(out - now)


class _Passage:
    """One request's way through the wire gate: admitted at its first chunk, not again."""

    __slots__ = ("gate", "admitted")

    def __init__(self, gate: WireGate) -> None:
        self.gate = gate
        self.admitted = False


async def _through_gate(session: Any, context: Any, params: Any) -> None:
    passage = context.trace_request_ctx
    if isinstance(passage, _Passage) and not passage.admitted:
        passage.admitted = True
        await passage.gate.admit()


def _error(status: int, error_type: str, payload: bytes) -> tuple[str, str]:
    """SES's error code and message from an error answer, as botocore's rest-json parser reads them."""
    try:
        document = json.loads(payload) if payload else {}
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    # The header may carry a suffix ("Code:http://internal..."), the body a namespace ("ns#Code").
    code = error_type.split(":", 1)[0] or str(document.get("code") or document.get("__type") or "")
    code = code.rsplit("#", 1)[-1] or str(status)
    message = str(document.get("message") or document.get("Message") or "")
    return code, message
