"""What a replay reads: one inbound record as the worker's handlers see it, and files of them.

A record file is JSON Lines, one record a line: ``topic``, ``partition``, ``offset``,
``timestamp`` (epoch milliseconds, as Kafka has it), ``key`` and ``value`` (base64, or null).
``tidings-replay --export FILE`` writes one from a topic range; any tool that can dump a topic
can write one too (``kcat -C -J`` output needs only its fields renamed).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from streams.errors import ConfigurationError


@dataclass
class ReplayRecord:
    """An input record with the fields of Faust's ``Message`` the handlers read (``runtime.emit.Source``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # epoch seconds
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else binascii.a2b_base64(text)  # what b64decode calls, without its wrapping


def dump_record(record: ReplayRecord) -> str:
    return json.dumps({
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "timestamp": round(record.timestamp * 1000), "key": _b64(record.key), "value": _b64(record.value),
    })


def load_record(line: str, where: str = "") -> ReplayRecord:
    try:
        return _record(line)
    except _NOT_A_RECORD as e:
        raise _not_a_record(where, e) from None


def _record(line: str) -> ReplayRecord:
    raw: dict[str, Any] = orjson.loads(line)
    return ReplayRecord(
        topic=str(raw["topic"]), partition=int(raw.get("partition", 0)), offset=int(raw.get("offset", 0)),
        key=_unb64(raw.get("key")), value=_unb64(raw.get("value")), timestamp=float(raw["timestamp"]) / 1000,
    )


_NOT_A_RECORD = (ValueError, KeyError, TypeError)  # orjson.JSONDecodeError is a ValueError


def _not_a_record(where: str, error: Exception) -> ConfigurationError:
    return ConfigurationError(f"{where}: not a record line ({type(error).__name__}: {error})")


def read_file(path: Path) -> Iterator[ReplayRecord]:
    """The records of a file, streamed (a million-line file is never held in memory)."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            # isspace: strip's test without its copy of the line (a line read is never empty)
            if not line.isspace():
                try:
                    record = _record(line)
                except _NOT_A_RECORD as e:  # where it is, formatted only then
                    raise _not_a_record(f"{path}:{number}", e) from None
                yield record


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


_PARTITION = re.compile(rb'"partition"\s*:\s*(\d+)')


def count_partitions(path: Path) -> dict[int, int]:
    """Records per partition number, without decoding the lines (a line without one is partition 0,
    as ``load_record`` reads it)."""
    counts: dict[int, int] = {}
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                m = _PARTITION.search(line)
                p = int(m.group(1)) if m else 0
                counts[p] = counts.get(p, 0) + 1
    return counts


def write_records(out: IO[str], records: Iterable[ReplayRecord]) -> int:
    n = 0
    for record in records:
        out.write(dump_record(record) + "\n")
        n += 1
    return n
