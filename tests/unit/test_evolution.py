"""Producers on an older and a newer schema version are both understood, in both wire formats.

The repository holds v1 of an event; the test adds a v2 that adds a field with a default and
removes one (as a team evolving its event would). The worker reads with the newest version: a
v1 writer's record gets the default for the new field and loses the removed one; a v2 writer's
record decodes as written. The Confluent path does the same through confluent-kafka's mock://
registry, where each producer registered the version it writes.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.confluent import ConfluentCodec
from streams.codecs.schemas import SchemaRepository
from streams.errors import UndecodableRecord

V1 = {
    "type": "record", "name": "DeviceLinked", "namespace": "tidings.test", "doc": "test",
    "fields": [
        {"name": "device_id", "type": "string", "doc": "d"},
        {"name": "nickname", "type": "string", "doc": "removed in v2"},
    ],
}
V2 = {
    "type": "record", "name": "DeviceLinked", "namespace": "tidings.test", "doc": "test",
    "fields": [
        {"name": "device_id", "type": "string", "doc": "d"},
        {"name": "platform", "type": "string", "default": "unknown", "doc": "added in v2"},
    ],
}
NAME = "tidings.test.DeviceLinked"


def _repository(tmp_path: Path, *versions: dict[str, Any]) -> SchemaRepository:
    (tmp_path / "common").mkdir(parents=True, exist_ok=True)
    folder = tmp_path / "inbound" / "test"
    folder.mkdir(parents=True, exist_ok=True)
    for n, schema in enumerate(versions, start=1):
        (folder / f"{NAME}.v{n}.avsc").write_text(json.dumps(schema))
    return SchemaRepository.load(tmp_path)


def test_single_object_old_and_new_writers(tmp_path: Path) -> None:
    old_producer = SingleObjectCodec(_repository(tmp_path / "old", V1))
    new_producer = SingleObjectCodec(_repository(tmp_path / "new", V1, V2))
    worker = new_producer  # the worker has every committed version, reads with the newest

    from_old = worker.decode(old_producer.encode(NAME, {"device_id": "d1", "nickname": "Car"}))
    assert (from_old.writer.version, from_old.reader.version) == (1, 2)
    assert from_old.record == {"device_id": "d1", "platform": "unknown"}

    from_new = worker.decode(new_producer.encode(NAME, {"device_id": "d2", "platform": "ios"}))
    assert from_new.writer.version == 2
    assert from_new.record == {"device_id": "d2", "platform": "ios"}


def test_a_newer_version_the_worker_does_not_know_is_rejected_not_guessed(tmp_path: Path) -> None:
    newer = SingleObjectCodec(_repository(tmp_path / "new", V1, V2))
    older_worker = SingleObjectCodec(_repository(tmp_path / "old", V1))
    with pytest.raises(UndecodableRecord) as err:
        older_worker.decode(newer.encode(NAME, {"device_id": "d", "platform": "ios"}))
    assert err.value.reason == "unknown_schema"


def test_confluent_wire_format_old_and_new_writers(tmp_path: Path) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    old_producer = ConfluentCodec(registry, _repository(tmp_path / "old", V1))
    new_producer = ConfluentCodec(registry, _repository(tmp_path / "new", V1, V2))
    worker = ConfluentCodec(registry, _repository(tmp_path / "worker", V1, V2))

    old_bytes = old_producer.encode(NAME, {"device_id": "d1", "nickname": "Car"})
    new_bytes = new_producer.encode(NAME, {"device_id": "d2", "platform": "ios"})
    assert old_bytes[0] == 0 and new_bytes[0] == 0 and old_bytes[1:5] != new_bytes[1:5]

    assert worker.decode(old_bytes).record == {"device_id": "d1", "platform": "unknown"}
    assert worker.decode(new_bytes).record == {"device_id": "d2", "platform": "ios"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\xc3\x01single-object, not confluent", "not_avro"),
        (b"\x00\x00\x00\x7f\xff\x02ab", "unknown_schema"),
    ],
)
def test_confluent_bad_bytes(tmp_path: Path, data: bytes, reason: str) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    with pytest.raises(UndecodableRecord) as err:
        ConfluentCodec(registry, _repository(tmp_path, V1)).decode(data)
    assert err.value.reason == reason


def test_confluent_truncated_body_is_corrupt(tmp_path: Path) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    codec = ConfluentCodec(registry, _repository(tmp_path, V1))
    data = codec.encode(NAME, {"device_id": "d1", "nickname": "A long nickname"})
    with pytest.raises(UndecodableRecord) as err:
        codec.decode(data[:-5])
    assert err.value.reason == "corrupt_body"


def test_registry_schema_registered_by_a_producer_is_the_expanded_record(tmp_path: Path) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ConfluentCodec(registry, _repository(tmp_path, V1)).encode(NAME, {"device_id": "d", "nickname": "n"})
    latest = registry.get_latest_version(NAME)
    assert json.loads(latest.schema.schema_str)["name"] == NAME


# The committed v2 events: every pack has one, each adds an optional field a template shows when set.
def _evolved(schemas: SchemaRepository) -> dict[str, str]:
    added = {}
    for name in schemas.names("inbound/"):
        if schemas.latest(name).version >= 2:
            old = {f["name"] for f in schemas.version(name, 1).parsed["fields"]}
            (new,) = [f["name"] for f in schemas.latest(name).parsed["fields"] if f["name"] not in old]
            added[name] = new
    return added


def test_every_pack_has_an_event_with_a_committed_v2(schemas: SchemaRepository) -> None:
    packs = {name.split(".")[1] for name in _evolved(schemas)}
    assert packs == {"advisors", "charging", "storage", "tracker"}


@pytest.mark.parametrize(
    "name",
    ["tidings.storage.AccessPinChanged", "tidings.charging.ChargeCardShipped",
     "tidings.advisors.CallbackRequested", "tidings.tracker.AccountCreated"],
)
def test_v1_and_v2_writers_both_mail_and_the_template_shows_the_new_field_only_when_set(
    name: str, schemas: SchemaRepository, codec: SingleObjectCodec, pipeline: Any, tenants: Any
) -> None:
    import datetime as dt

    from streams.domain.samples import sample_event

    field = _evolved(schemas)[name]
    pack = name.split(".")[1]
    tenant = next(t for t in tenants if pack in t.packs and pipeline.catalog.handles(name)
                  and any(t.is_enabled(tr.key) for tr in pipeline.catalog.event_triggers() if tr.rule.event == name))
    event = sample_event(pipeline.catalog.samples, name, tenant.tenant_id)
    value = event[field]
    assert value, f"the {name} sample should set the v2 field {field}"
    v1_event = {k: v for k, v in event.items() if k != field}
    now = dt.datetime.now(dt.timezone.utc)
    texts = {}
    for version, record in ((1, v1_event), (2, event)):
        data = codec.encode(name, record, version=version)
        assert codec.decode(data).writer.version == version
        result = pipeline.process(data, topic="t", timestamp=now, now=now)
        assert result.rejections == [] and result.mails, (version, result.rejections)
        texts[version] = [m.record["text"] + m.record["html"] for m in result.mails]
    assert all(value in text for text in texts[2])
    assert not any(value in text for text in texts[1])
