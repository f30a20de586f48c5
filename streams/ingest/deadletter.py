"""Dead-letter records: the original bytes, unchanged, with the reason in headers.

Keeping the value byte-for-byte means nothing is lost and a fixed record can be re-driven. The
headers are machine-readable (``tidings.reason`` is a snake_case code) and never contain payload
values: ``tidings.detail`` is written by Tidings' own error messages, which name fields, not data.
"""

from __future__ import annotations

from streams.ingest.pipeline import Rejection

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
