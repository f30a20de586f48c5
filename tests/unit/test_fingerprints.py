"""Every committed schema's fingerprint equals the one the reference Java Avro library computes.

``tests/java/vectors/fingerprints.json`` was written by ``SchemaNormalization.parsingFingerprint64``
of org.apache.avro over the same files (``python -m tests.java.probe vectors`` regenerates it).
Records of the four schemas whose fingerprint changed keep decoding under the legacy one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.local.samples import BOOKING_CREATED
from streams.codecs.avro import HEADER_SIZE, SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.domain.samples import sample_event
from streams.settings import REPO_ROOT

JAVA = json.loads((REPO_ROOT / "tests" / "java" / "vectors" / "fingerprints.json").read_text(encoding="utf-8"))
ROOT = REPO_ROOT / "schemas"


def test_every_committed_schema_has_a_java_vector() -> None:
    committed = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.v*.avsc"))
    assert committed == sorted(JAVA), "run: .venv/bin/python -m tests.java.probe vectors"


def test_fingerprints_equal_the_java_reference(schemas: SchemaRepository) -> None:
    ours = {v.path.relative_to(ROOT).as_posix(): v.fingerprint.hex() for v in schemas}
    assert len(ours) == len(JAVA)
    assert {k: v for k, v in ours.items() if JAVA.get(k) != v} == {}


def test_the_schemas_that_use_a_named_type_twice_keep_their_old_fingerprint(schemas: SchemaRepository) -> None:
    legacy = sorted(v.name for v in schemas if v.legacy_fingerprint is not None)
    assert "tidings.advisors.AppointmentBooked" in legacy
    assert "tidings.storage.PriceAdjustmentScheduled" in legacy
    # The figure: the pre-spec fingerprint Python producers wrote for AppointmentBooked.
    booked = schemas.version("tidings.advisors.AppointmentBooked", 1)
    assert booked.legacy_fingerprint == bytes.fromhex("6d3b92d5db28a75f")
    assert booked.fingerprint == bytes.fromhex("f942ccf784017b80")


@pytest.mark.parametrize("name", ["tidings.advisors.AppointmentBooked", "tidings.storage.PriceAdjustmentScheduled"])
def test_a_record_under_the_legacy_fingerprint_still_decodes_and_is_marked(codec: SingleObjectCodec, name: str) -> None:
    version = codec.schemas.version(name, 1)
    assert version.legacy_fingerprint is not None
    event = sample_event(_samples(), name, "lagerhaus-nord")
    current = codec.encode(name, event, version=1)
    old = current[:2] + version.legacy_fingerprint + current[HEADER_SIZE:]
    decoded = codec.decode(old)
    assert decoded.writer.version == 1 and decoded.legacy_fingerprint
    assert decoded.record == codec.decode(current).record
    assert not codec.decode(current).legacy_fingerprint


def test_a_schema_that_uses_each_named_type_once_has_no_legacy_fingerprint(schemas: SchemaRepository) -> None:
    assert schemas.version(BOOKING_CREATED, 1).legacy_fingerprint is None


def _samples() -> Path:
    from streams.settings import Settings
    from streams.topics import TopicNames

    return TopicNames.from_settings(Settings()).catalog.samples  # type: ignore[no-any-return]
