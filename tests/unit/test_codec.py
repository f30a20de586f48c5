from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.codecs.avro import MAGIC, SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.errors import ConfigurationError, UndecodableRecord
from tests.unit.conftest import NOW


def test_round_trip_keeps_every_value(codec: SingleObjectCodec) -> None:
    event = booking_created("lagerhaus-nord", 7, locale="de-AT", occurred_at=NOW)  # timestamp-millis: no µs
    decoded = codec.decode(codec.encode(BOOKING_CREATED, event))
    assert decoded.type_name == BOOKING_CREATED
    assert decoded.record == event


def test_header_is_marker_and_the_writers_crc64_fingerprint(codec: SingleObjectCodec, schemas: SchemaRepository) -> None:
    data = codec.encode(BOOKING_CREATED, booking_created("lagerhaus-nord", 1))
    assert data[:2] == MAGIC
    assert data[2:10] == schemas.latest(BOOKING_CREATED).fingerprint


def test_fingerprint_follows_the_avro_specification(tmp_path: Path) -> None:
    # The Avro spec's CRC-64-AVRO of the canonical form "int" is 0x7275d51a3f395c8f, written
    # little-endian in single-object encoding. A record wrapping nothing else is easier to place
    # in a repository, so compare against an independent implementation of the spec's algorithm.
    (tmp_path / "common").mkdir()
    (tmp_path / "x").mkdir()
    schema = {"type": "record", "name": "Ping", "namespace": "t", "fields": [{"name": "n", "type": "int"}]}
    (tmp_path / "x" / "t.Ping.v1.avsc").write_text(json.dumps(schema))
    repo = SchemaRepository.load(tmp_path)
    canonical = b'{"name":"t.Ping","type":"record","fields":[{"name":"n","type":"int"}]}'
    assert repo.latest("t.Ping").fingerprint == _crc64_avro(canonical).to_bytes(8, "little")


def _crc64_avro(data: bytes) -> int:
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"{\"json\": true}", "not_avro"),
        (MAGIC + b"\x00" * 3, "not_avro"),  # shorter than a header
        (MAGIC + b"\x01\x02\x03\x04\x05\x06\x07\x08" + b"\x00", "unknown_schema"),
    ],
)
def test_bytes_that_are_not_our_avro_are_rejected_with_a_reason(
    codec: SingleObjectCodec, data: bytes | None, reason: str
) -> None:
    with pytest.raises(UndecodableRecord) as err:
        codec.decode(data)
    assert err.value.reason == reason


def test_truncated_and_padded_bodies_are_corrupt(codec: SingleObjectCodec) -> None:
    data = codec.encode(BOOKING_CREATED, booking_created("lagerhaus-nord", 1))
    for bad in (data[: len(data) - 20], data + b"\x00\x01"):
        with pytest.raises(UndecodableRecord) as err:
            codec.decode(bad)
        assert err.value.reason == "corrupt_body"


def test_encoding_refuses_a_record_missing_a_required_field(codec: SingleObjectCodec) -> None:
    event = booking_created("lagerhaus-nord", 1)
    del event["site_name"]
    with pytest.raises(ValueError):
        codec.encode(BOOKING_CREATED, event)


def test_every_schema_and_field_is_documented(schemas: SchemaRepository) -> None:
    for version in schemas:
        raw = json.loads(version.path.read_text())
        assert raw.get("doc"), f"{version.path}: the record needs a doc saying who produces it"
        undocumented = [f["name"] for f in raw["fields"] if not f.get("doc")]
        assert undocumented == [], f"{version.path}: fields without doc"


def test_a_file_named_after_another_record_is_refused(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    schema = {"type": "record", "name": "Pong", "namespace": "t", "fields": []}
    (tmp_path / "t.Ping.v1.avsc").write_text(json.dumps(schema))
    with pytest.raises(ConfigurationError, match="declares t.Pong"):
        SchemaRepository.load(tmp_path)


def test_a_field_documented_as_secret_is_marked_secret(schemas: SchemaRepository) -> None:
    # The marker, not the prose, is what keeps a secret out of the dead-letter topic.
    import re

    def unmarked(record: dict, prefix: str = "") -> list[str]:  # type: ignore[type-arg]
        found = []
        for field in record.get("fields", []):
            doc = field.get("doc", "")
            if re.search(r"\bsecret\b", doc, re.I) and not re.search(r"not a secret", doc, re.I) and field.get("secret") is not True:
                found.append(prefix + field["name"])
            for branch in field["type"] if isinstance(field["type"], list) else [field["type"]]:
                if isinstance(branch, dict) and branch.get("type") == "record":
                    found += unmarked(branch, f"{prefix}{field['name']}.")
        return found

    for version in schemas:
        assert unmarked(json.loads(version.path.read_text())) == [], version.path
