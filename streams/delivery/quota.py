"""SES quota headroom for operators: the account's ``GetAccount`` answer, polled once a minute.

SES v2 ``GetAccount`` (``GET /v2/email/account``) answers the account's send quota
(``SendQuota``: ``MaxSendRate`` per second, ``Max24HourSend``, ``SentLast24Hours``), whether
sending is enabled and the enforcement status (``HEALTHY``, ``PROBATION``, ``SHUTDOWN``). The
worker exports them as gauges (``streams/metrics.py``: ``tidings_ses_*``) so the dashboard draws
the send rate against the quota and the alert "sender pinned at its quota" has the quota to
compare with. Only the senders that talk to SES have ``account()``; with any other sender (the
recording twin) there is nothing to poll.

A failed poll is counted (``tidings_ses_account_polls_total{outcome="error"}``) and leaves the
gauges at their last values: the quota does not change from one minute to the next, and a wrong
zero would page someone. moto's server does not implement ``GetAccount``; the SES stand-in
(``deploy/sesstub``) and SES do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.metrics import Metrics

log = logging.getLogger(__name__)

# Once a minute: the quota changes when AWS raises it (days), SentLast24Hours is a rolling sum,
# and every poll is a signed request against the same account-wide API rate as the sends.
POLL_INTERVAL_SECONDS = 60.0

ENFORCEMENT_STATUSES = ("HEALTHY", "PROBATION", "SHUTDOWN")


@dataclass(frozen=True)
class SesAccount:
    max_send_rate: float  # recipients per second
    max_24h_send: float  # recipients per rolling 24 hours; -1: unlimited
    sent_last_24h: float
    sending_enabled: bool
    enforcement_status: str


def parse_account(document: Mapping[str, Any]) -> SesAccount:
    """``GetAccount``'s JSON answer (the REST document and boto3's dict have the same keys).

    An answer without the quota or the sending state is no ``GetAccount`` answer (an emulator that
    does not implement it may answer 200 with something else): it raises, so the poll counts an
    error instead of exporting "sending disabled", which would page someone.
    """
    quota = document.get("SendQuota")
    if not isinstance(quota, Mapping) or "MaxSendRate" not in quota or "SendingEnabled" not in document:
        raise ValueError(f"not a GetAccount answer: {sorted(document)[:10]}")
    return SesAccount(
        max_send_rate=float(quota.get("MaxSendRate", 0.0)),
        max_24h_send=float(quota.get("Max24HourSend", 0.0)),
        sent_last_24h=float(quota.get("SentLast24Hours", 0.0)),
        sending_enabled=bool(document.get("SendingEnabled", False)),
        enforcement_status=str(document.get("EnforcementStatus") or "UNKNOWN"),
    )


def record(m: Metrics, account: SesAccount) -> None:
    m.ses_max_send_rate.set(account.max_send_rate)
    m.ses_max_24h_send.set(account.max_24h_send)
    m.ses_sent_last_24h.set(account.sent_last_24h)
    m.ses_sending_enabled.set(1.0 if account.sending_enabled else 0.0)
    status = account.enforcement_status if account.enforcement_status in ENFORCEMENT_STATUSES else "other"
    for name in (*ENFORCEMENT_STATUSES, "other"):
        m.ses_enforcement_status.labels(name).set(1.0 if name == status else 0.0)


def quota_poller(sender: object, m: Metrics) -> Callable[[], Awaitable[None]] | None:
    """The once-a-minute poll for ``sender``, or None when it has no account to ask about."""
    account: Callable[[], Awaitable[Mapping[str, Any]]] | None = getattr(sender, "account", None)
    if account is None:
        return None

    async def poll() -> None:
        try:
            document = await account()
            parsed = parse_account(document)
        except Exception as e:  # noqa: BLE001 - any failure is counted; the next poll tries again
            m.ses_account_polls.labels("error").inc()
            log.warning("SES GetAccount failed (quota gauges keep their last values): %s: %s", type(e).__name__, e)
            return
        record(m, parsed)
        m.ses_account_polls.labels("ok").inc()

    return poll
