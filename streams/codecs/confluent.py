"""The Confluent wire format: a zero byte, a 4-byte big-endian schema id, the Avro binary body.

The writer schema is fetched from a Schema Registry by id (once; ids are immutable, so the parsed
schema is cached for the life of the worker) and resolved to the newest version of the same
record in ``schemas/``, exactly like single-object encoding does with fingerprints. Producers
register their schema under the record name (``RecordNameStrategy``), since one topic carries
several event types.

A registry that cannot be reached is not bad input: lookups are retried a few times and then
raise ``RegistryUnavailable``, which the agent dead-letters as ``internal_error`` (bytes kept,
re-drivable) rather than as a verdict on the record.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import parse_schema

from streams.codecs.avro import Decoded
from streams.codecs.schemas import SchemaRepository, SchemaVersion, spec_fingerprint, standalone
from streams.errors import TidingsError, UndecodableRecord

MAGIC = 0
HEADER_SIZE = 5
REGISTRY_ATTEMPTS = 3
REGISTRY_BACKOFF_SECONDS = 0.5


class RegistryUnavailable(TidingsError):
    """The Schema Registry did not answer; the record itself may be fine."""


class ConfluentCodec:
    def __init__(self, registry: Any, schemas: SchemaRepository) -> None:
        self.registry = registry
        self.schemas = schemas
        self._writers: dict[int, SchemaVersion | None] = {}
        self._ids: dict[str, int] = {}

    @classmethod
    def for_url(cls, url: str, schemas: SchemaRepository) -> ConfluentCodec:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return cls(SchemaRegistryClient.new_client({"url": url}), schemas)

    def decode(self, data: bytes | None) -> Decoded:
        if not data:
            raise UndecodableRecord("empty value", reason="empty")
        if len(data) < HEADER_SIZE or data[0] != MAGIC:
            raise UndecodableRecord("not the Confluent wire format (no leading zero byte)", reason="not_avro")
        schema_id = int.from_bytes(data[1:HEADER_SIZE], "big")
        writer = self._writer(schema_id)
        if writer is None:
            raise UndecodableRecord(f"schema id {schema_id} is not in the registry", reason="unknown_schema")
        reader = self.schemas.latest(writer.name) if self.schemas.has(writer.name) else writer
        body = io.BytesIO(data[HEADER_SIZE:])
        try:
            record = schemaless_reader(body, writer.parsed, reader.parsed)
        except Exception as e:  # fastavro raises EOFError, ValueError, UnicodeDecodeError ...
            raise UndecodableRecord(
                f"{writer.name} (registry id {schema_id}) body does not decode: {type(e).__name__}", reason="corrupt_body"
            ) from e
        if body.tell() != len(data) - HEADER_SIZE or not isinstance(record, dict):
            raise UndecodableRecord(f"{writer.name} (registry id {schema_id}) body has trailing bytes", reason="corrupt_body")
        return Decoded(type_name=writer.name, record=record, writer=writer, reader=reader)

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Register (once) the newest version of ``name`` and encode ``record`` with it."""
        schema = self.schemas.latest(name)
        if name not in self._ids:
            from confluent_kafka.schema_registry import Schema

            self._ids[name] = self.registry.register_schema(name, Schema(json.dumps(standalone(schema.parsed)), "AVRO"))
        out = io.BytesIO()
        out.write(bytes([MAGIC]))
        out.write(self._ids[name].to_bytes(4, "big"))
        schemaless_writer(out, schema.parsed, record, strict_allow_default=True)
        return out.getvalue()

    def _writer(self, schema_id: int) -> SchemaVersion | None:
        if schema_id not in self._writers:
            self._writers[schema_id] = self._fetch(schema_id)
        return self._writers[schema_id]

    def _fetch(self, schema_id: int) -> SchemaVersion | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        for attempt in range(REGISTRY_ATTEMPTS):
            try:
                registered = self.registry.get_schema(schema_id)
                break
            except SchemaRegistryError as e:
                if e.http_status_code == 404:
                    return None
                error: Exception = e
            except Exception as e:  # transport errors of the HTTP client
                error = e
            time.sleep(REGISTRY_BACKOFF_SECONDS * (attempt + 1))
        else:
            raise RegistryUnavailable(f"schema registry lookup of id {schema_id} failed: {error}") from error
        if registered.schema_type not in (None, "AVRO"):
            return None
        parsed = parse_schema(json.loads(registered.schema_str))
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            return None
        return SchemaVersion(
            name=parsed["name"],
            version=0,
            parsed=parsed,
            fingerprint=spec_fingerprint(parsed),
            path=Path(f"registry/{schema_id}"),
            group="registry",
        )
