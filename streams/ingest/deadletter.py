"""Dead-letter records: the original bytes, unchanged, with the reason in headers.

Keeping the value byte-for-byte means nothing is lost and a fixed record can be re-driven. The
headers are machine-readable (``tidings.reason`` is a snake_case code) and never contain payload
values: ``tidings.detail`` is written by Tidings' own error messages, which name fields, not data.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.ingest.pipeline import Rejection

log = logging.getLogger(__name__)

MAX_DETAIL_BYTES = 1024


def dead_letter_headers(rejection: Rejection, *, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    headers = [
        ("tidings.reason", rejection.reason.encode()),
        ("tidings.stage", rejection.stage.encode()),
        ("tidings.detail", rejection.detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]),
        ("tidings.source.topic", topic.encode()),
        ("tidings.source.partition", str(partition).encode()),
        ("tidings.source.offset", str(offset).encode()),
    ]
    if rejection.message_id:
        headers.append(("tidings.message_id", rejection.message_id.encode()))
    if rejection.redacted:
        headers.append(("tidings.redacted", ",".join(rejection.redacted).encode()))
    return headers


async def send_dead_letter(topic: Any, msg: Any, rejection: Rejection, metrics: Any, value: bytes | None = None) -> None:
    """Write ``msg`` (or ``value`` in its place) to the dead-letter ``topic`` with the reason headers.

    On the input's partition, so it joins the transaction of the input offset (``streams/topics.py``),
    and counted in ``tidings_failures_total`` and ``tidings_dead_letters_total``.
    """
    log.warning("dead-lettered %s[%s]@%s: %s (%s)", msg.topic, msg.partition, msg.offset, rejection.reason, rejection.detail)
    await topic.send(
        key=msg.key,
        value=msg.value if value is None else value,
        partition=msg.partition,
        headers=dead_letter_headers(rejection, topic=msg.topic, partition=msg.partition, offset=msg.offset),
    )
    metrics.failures.labels(rejection.stage, rejection.reason).inc()
    metrics.dead_letters.labels(rejection.stage, rejection.reason).inc()
