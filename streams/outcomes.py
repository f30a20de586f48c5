"""What a stage decides about one input record, shared by every stage (and below all of them).

A ``Rejection`` is the reason one record, or one mail of it, is dead-lettered; the headers a
dead letter carries are built here, so the ingest, timers, delivery and feedback stages, the
runtime that writes them and the re-drive tool that reads them agree on one format without
importing each other.

The headers are machine-readable (``tidings.reason`` is a snake_case code) and never contain
payload values: ``tidings.detail`` is written by Tidings' own error messages, which name fields,
not data.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DETAIL_BYTES = 1024


@dataclass(frozen=True)
class Rejection:
    stage: str
    reason: str
    detail: str
    message_id: str | None = None
    replacement: bytes | None = None  # dead-letter these bytes instead of the input (secrets redacted)
    redacted: tuple[str, ...] = ()


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
