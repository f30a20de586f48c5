"""The one-click unsubscribe endpoint (RFC 8058) on the worker's web server.

``POST /unsubscribe/<token>`` verifies the token (``streams/domain/token.py``) and publishes a
``tidings.feedback.Unsubscribed`` event to ``<prefix>unsubscribes``; the feedback agent turns it
into a suppression like any other unsubscribe. It answers 200 once the broker has the event, 400
for a token this deployment did not issue (nothing is published), 503 when the broker cannot
take it (the client may retry; nothing is lost either way).

``GET`` only shows a page with a button that POSTs: mail clients, proxies and link scanners fetch
links on their own, and a fetch must never unsubscribe anyone. The pages name no address.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from typing import TYPE_CHECKING, Any

from streams.domain.token import BadToken
from streams.errors import ConfigurationError
from streams.suppression.feedback import UNSUBSCRIBE_EVENT
from streams.suppression.model import normalize_address, record_key

if TYPE_CHECKING:
    from streams.app import Runtime
    from streams.runtime.app import Wiring

log = logging.getLogger(__name__)

PATH = "/unsubscribe/{token}"
SOURCE = "one_click"

_CONFIRM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>Unsubscribe</title></head>
<body><form method="post"><p>Stop receiving these emails?</p>
<button type="submit" name="List-Unsubscribe" value="One-Click">Unsubscribe</button></form></body></html>
"""
_DONE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>Unsubscribed</title></head><body><p>You are unsubscribed. Service messages about your account still reach you.</p></body></html>
"""
_BAD_PAGE = "This unsubscribe link is not valid. Please use the link from the email itself.\n"


HTML, TEXT = "text/html", "text/plain"


def register(wiring: Wiring, rt: Runtime) -> None:
    async def get(token: str) -> tuple[int, str, str]:
        if rt.unsubscribe_tokens is None or not _valid(token):
            return 400, TEXT, _BAD_PAGE
        return 200, HTML, _CONFIRM_PAGE

    async def post(token: str) -> tuple[int, str, str]:
        if rt.unsubscribe_tokens is None:
            return 400, TEXT, _BAD_PAGE
        try:
            tenant_id, address = rt.unsubscribe_tokens.verify(token)
        except BadToken:
            log.info("refused an unsubscribe with a token this deployment did not issue")
            return 400, TEXT, _BAD_PAGE
        record = _unsubscribed(tenant_id, address, rt.clock.now())
        value = rt.codec.encode(UNSUBSCRIBE_EVENT, record)
        key = record_key(tenant_id, normalize_address(address) or address)
        try:
            await asyncio.to_thread(rt.suppression_writer.publish_raw, rt.topics.unsubscribes, key, value)
        except ConfigurationError as e:
            log.warning("could not publish a one-click unsubscribe: %s", e)
            return 503, TEXT, "Please try again in a minute.\n"
        return 200, HTML, _DONE_PAGE

    def _valid(token: str) -> bool:
        assert rt.unsubscribe_tokens is not None
        try:
            rt.unsubscribe_tokens.verify(token)
            return True
        except BadToken:
            return False

    wiring.page(PATH, get=get, post=post, name="unsubscribe")


def _unsubscribed(tenant_id: str, address: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "envelope": {"event_id": str(uuid.uuid4()), "tenant_id": tenant_id, "occurred_at": now, "producer": "tidings-one-click"},
        "email": address,
        "source": SOURCE,
    }
