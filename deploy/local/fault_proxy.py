"""A fault-injecting HTTP proxy in front of the SES emulator, for the failures moto cannot produce.

    proxy = FaultProxy(emulator.endpoint).start()   # point the sender at proxy.endpoint
    proxy.throttle(0.3, seed=7)        # 30 % of SendEmail calls: 429 TooManyRequestsException
    proxy.unavailable()                # every call: 503 ServiceUnavailable
    proxy.unavailable("reset")         # every call: the connection is reset, no answer at all
    proxy.reject("bounce")             # SendEmail to a recipient containing "bounce": 400 MessageRejected
    proxy.pause()                      # every SendEmail: 400 SendingPausedException (the account is paused)
    proxy.heal()                       # everything passes through again
    proxy.stats()                      # requests seen / faulted / forwarded, accepted-send times
    proxy.stop()                       # or use it as a context manager

Faults are switched from any thread while requests flow; each takes ``seconds=`` to heal itself
after that long ("SES throttles for a minute": ``throttle(0.3, seconds=60)``). Several faults can be
on at once; a request meets them in this order: unavailable (every request), throttle (SendEmail
only), pause (SendEmail only), reject (SendEmail only). Everything else is forwarded unchanged, including the
``/moto-api`` pages.

Error answers have SES v2's shape. SES v2 is a REST-JSON API: the status code, the error code in
the ``x-amzn-ErrorType`` header (botocore takes ``ClientError``'s code from there) and
``{"message": ...}`` as the body. Codes and statuses are the ones the SendEmail API reference
lists: ``TooManyRequestsException`` 429, ``MessageRejected`` 400.

Safety: the proxy listens on 127.0.0.1 only and forwards only to the upstream given at
construction, which must be ``http://127.0.0.1:<port>``; neither the request's Host header nor an
absolute URI in the request line chooses where a request goes.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import email.parser
import email.utils
import http.client
import json
import logging
import random
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

SEND_EMAIL_PATH = "/v2/email/outbound-emails"  # POST: SES v2 SendEmail
UPSTREAM_TIMEOUT_SECONDS = 30.0  # moto answers in milliseconds; this only bounds a hung emulator
SHUTDOWN_POLL_SECONDS = 0.05  # how often serve_forever looks for stop(); its default 0.5 s slows every test
# Headers about one connection, not the message; the proxy sets its own Content-Length.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "expect", "content-length",
})

UnavailableMode = Literal["503", "reset"]


@dataclass(frozen=True)
class ProxyStats:
    """Counters since the proxy started; ``accepted_sends`` are ``time.monotonic()`` stamps."""

    requests: int  # every request the proxy read
    send_requests: int  # of which SendEmail
    faulted: int  # answered (or reset) by a fault, never forwarded
    forwarded: int  # handed to the upstream, whatever it answered
    upstream_errors: int  # forwarding failed; the client got 502
    # SendEmail calls the upstream answered with 2xx, stamped when the proxy received them (SES
    # meters requests as they arrive; the answer's time would add the emulator's own delays), in order
    accepted_sends: tuple[float, ...]

    def peak_sends(self, window: float = 1.0) -> int:
        """The most accepted sends in any half-open window of ``window`` seconds."""
        stamps = self.accepted_sends
        return max((bisect.bisect_left(stamps, s + window) - i for i, s in enumerate(stamps)), default=0)


@dataclass(frozen=True)
class _ErrorAnswer:
    status: int
    code: str
    message: str


_RESET: Literal["reset"] = "reset"
_Answer = _ErrorAnswer | Literal["reset"] | None


class FaultProxy:
    """A reverse proxy on 127.0.0.1 (a free port) in front of one upstream on 127.0.0.1."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.port is None or parts.path not in ("", "/"):
            raise ValueError(f"the fault proxy forwards only to http://127.0.0.1:<port>, got {upstream!r}")
        self.upstream = f"http://127.0.0.1:{parts.port}"
        self._upstream_port = parts.port
        self._lock = threading.Lock()
        self._random = random.Random(0)
        self._throttle: tuple[float, float | None] | None = None  # (fraction, heal at)
        self._unavailable: tuple[UnavailableMode, float | None] | None = None
        self._rejects: list[tuple[str, float | None]] = []
        self._paused: float | None | bool = False  # False: not paused; else when it heals (None: never)
        self._requests = self._send_requests = self._faulted = self._forwarded = self._upstream_errors = 0
        self._accepted_sends: list[float] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the fault proxy is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- lifecycle

    def start(self) -> FaultProxy:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()  # no new connections
        self._server.drop_connections()  # idle keep-alive connections end their handler threads
        self._server.server_close()  # joins the handler threads
        assert self._thread is not None
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults

    def throttle(self, fraction: float, seed: int = 0, *, seconds: float | None = None) -> None:
        """Answer ``fraction`` of SendEmail calls (drawn from ``Random(seed)``) with 429 TooManyRequestsException."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], got {fraction}")
        with self._lock:
            self._random = random.Random(seed)
            self._throttle = (fraction, _deadline(seconds))

    def unavailable(self, mode: UnavailableMode = "503", *, seconds: float | None = None) -> None:
        """Answer every request with 503 ServiceUnavailable ("503") or reset its connection unanswered ("reset")."""
        if mode not in ("503", "reset"):
            raise ValueError(f"mode must be '503' or 'reset', got {mode!r}")
        with self._lock:
            self._unavailable = (mode, _deadline(seconds))

    def reject(self, recipient_substring: str, *, seconds: float | None = None) -> None:
        """Answer SendEmail calls with a recipient containing the substring (any case) with 400 MessageRejected."""
        if not recipient_substring:
            raise ValueError("an empty substring would reject every mail; use unavailable() for that")
        with self._lock:
            self._rejects.append((recipient_substring.lower(), _deadline(seconds)))

    def pause(self, *, seconds: float | None = None) -> None:
        """Answer every SendEmail with 400 SendingPausedException: SES paused the account's sending."""
        with self._lock:
            self._paused = _deadline(seconds)

    def heal(self) -> None:
        """Turn every fault off; the counters keep counting."""
        with self._lock:
            self._throttle = self._unavailable = None
            self._rejects = []
            self._paused = False

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                requests=self._requests,
                send_requests=self._send_requests,
                faulted=self._faulted,
                forwarded=self._forwarded,
                upstream_errors=self._upstream_errors,
                accepted_sends=tuple(self._accepted_sends),
            )

    # --- called from the handler threads

    def _decide(self, method: str, path: str, body: bytes) -> _Answer:
        is_send = method == "POST" and path.rstrip("/") == SEND_EMAIL_PATH
        recipients = _recipients(body) if is_send else ()
        with self._lock:
            now = time.monotonic()
            self._requests += 1
            self._send_requests += is_send
            answer = self._fault_for(is_send, recipients, now)
            if answer is None:
                self._forwarded += 1
            else:
                self._faulted += 1
            return answer

    def _fault_for(self, is_send: bool, recipients: tuple[str, ...], now: float) -> _Answer:
        if self._unavailable is not None and _active(self._unavailable[1], now):
            if self._unavailable[0] == "reset":
                return _RESET
            return _ErrorAnswer(503, "ServiceUnavailable", "Service Unavailable")
        if not is_send:
            return None
        if self._throttle is not None and _active(self._throttle[1], now):
            fraction = self._throttle[0]
            if fraction >= 1.0 or self._random.random() < fraction:
                return _ErrorAnswer(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        if self._paused is not False and _active(self._paused, now):
            return _ErrorAnswer(400, "SendingPausedException", "Sending is paused for this account (fault proxy).")
        for substring, until in self._rejects:
            if _active(until, now) and any(substring in r.lower() for r in recipients):
                return _ErrorAnswer(400, "MessageRejected", "Email address is on the rejection list (fault proxy).")
        return None

    def _forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self._upstream_port, timeout=UPSTREAM_TIMEOUT_SECONDS)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            if method == "HEAD" and response.getheader("Content-Length") is not None:
                kept.append(("Content-Length", str(response.getheader("Content-Length"))))
            return response.status, response.reason, kept, data
        finally:
            connection.close()

    def _record_upstream(self, is_send: bool, status: int | None, arrived: float) -> None:
        with self._lock:
            if status is None:
                self._upstream_errors += 1
            elif is_send and 200 <= status < 300:
                bisect.insort(self._accepted_sends, arrived)  # answers come back out of arrival order


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads: nothing outlives stop()

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("fault proxy: " + format, *args)

    def _proxy(self) -> None:
        arrived = time.monotonic()  # the request line and headers are read; the body follows
        proxy = self.server.proxy
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(501, "chunked request bodies are not supported by the fault proxy")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urlsplit(self.path)  # an absolute URI only contributes its path and query
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        answer = proxy._decide(self.command, parts.path, body)
        if answer == _RESET:
            # Linger 0: closing sends RST instead of FIN, so the client sees a reset, not an answer.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if isinstance(answer, _ErrorAnswer):
            self._answer_error(answer)
            return
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        is_send = self.command == "POST" and parts.path.rstrip("/") == SEND_EMAIL_PATH
        try:
            status, reason, response_headers, data = proxy._forward(self.command, target, headers, body)
        except (OSError, http.client.HTTPException) as e:
            proxy._record_upstream(is_send, None, arrived)
            log.warning("fault proxy: upstream %s failed: %s", proxy.upstream, e)
            self._answer(502, "Bad Gateway", [("Content-Type", "text/plain")], f"upstream failed: {e}".encode())
            return
        proxy._record_upstream(is_send, status, arrived)
        self._answer(status, reason, response_headers, data)

    def _answer_error(self, error: _ErrorAnswer) -> None:
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-ErrorType", error.code),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            ("Date", email.utils.formatdate(usegmt=True)),
        ]
        reason = http.client.responses.get(error.status, "Error")
        self._answer(error.status, reason, headers, json.dumps({"message": error.message}).encode())

    def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _deadline(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


def _active(until: float | None, now: float) -> bool:
    return until is None or now < until


def _recipients(body: bytes) -> tuple[str, ...]:
    """The recipients of a SendEmail request: its Destination, else the raw message's To/Cc/Bcc."""
    try:
        request = json.loads(body)
    except ValueError:
        return ()
    if not isinstance(request, dict):
        return ()
    destination = request.get("Destination") or {}
    found = [a for key in ("ToAddresses", "CcAddresses", "BccAddresses") for a in destination.get(key, ())]
    raw = ((request.get("Content") or {}).get("Raw") or {}).get("Data")
    if not found and isinstance(raw, str):
        try:
            headers = email.parser.BytesHeaderParser().parsebytes(base64.b64decode(raw))
        except (binascii.Error, ValueError):
            return ()
        found = [str(v) for key in ("To", "Cc", "Bcc") for v in headers.get_all(key, [])]
    return tuple(str(a) for a in found)
