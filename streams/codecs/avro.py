"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + binary body.

Decoding looks the writer schema up by fingerprint and resolves it to the newest version of the
same record (schema evolution). Every failure is an ``UndecodableRecord`` with a reason code, so
the ingest agent can dead-letter the bytes unchanged and go on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from streams.codecs.schemas import SchemaRepository, SchemaVersion
from streams.errors import UndecodableRecord

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


@dataclass(frozen=True)
class Decoded:
    """A decoded record with the schema versions that wrote and read it."""

    type_name: str
    record: dict[str, Any]
    writer: SchemaVersion
    reader: SchemaVersion
    # Written under the fingerprint Tidings used before it followed the spec (see schemas.py).
    legacy_fingerprint: bool = False


class SingleObjectCodec:
    """Encode and decode records of the repository's schemas."""

    def __init__(self, schemas: SchemaRepository) -> None:
        self.schemas = schemas

    def encode(self, name: str, record: dict[str, Any], *, version: int | None = None) -> bytes:
        schema = self.schemas.latest(name) if version is None else self.schemas.version(name, version)
        out = io.BytesIO()
        out.write(MAGIC)
        out.write(schema.fingerprint)
        # strict: a missing field is an error here, not a silent default at the producer.
        schemaless_writer(out, schema.parsed, record, strict_allow_default=True)
        return out.getvalue()

    def decode(self, data: bytes | None) -> Decoded:
        if not data:
            raise UndecodableRecord("empty value", reason="empty")
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise UndecodableRecord("not Avro single-object encoding (no C3 01 marker)", reason="not_avro")
        fp = data[2:HEADER_SIZE]
        writer = self.schemas.by_fingerprint(fp)
        if writer is None:
            raise UndecodableRecord(
                f"unknown schema fingerprint {data[2:HEADER_SIZE].hex()}", reason="unknown_schema"
            )
        reader = self.schemas.latest(writer.name)
        body = io.BytesIO(data[HEADER_SIZE:])
        try:
            record = schemaless_reader(body, writer.parsed, reader.parsed)
        except Exception as e:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, IndexError ...
            raise UndecodableRecord(
                f"{writer.name} v{writer.version} body does not decode: {type(e).__name__}", reason="corrupt_body"
            ) from e
        if body.tell() != len(data) - HEADER_SIZE:
            raise UndecodableRecord(
                f"{writer.name} v{writer.version} body has trailing bytes", reason="corrupt_body"
            )
        if not isinstance(record, dict):
            raise UndecodableRecord(f"{writer.name} is not a record schema", reason="unknown_schema")
        return Decoded(
            type_name=writer.name, record=record, writer=writer, reader=reader, legacy_fingerprint=fp != writer.fingerprint
        )
