"""Producers in another language: events from the Java reference libraries are mailed.

The Java probe (``tests/java``) encodes each event with org.apache.avro's
``BinaryMessageEncoder`` (single-object encoding, the fingerprint Java computes) and produces it
with Kafka's Java client and its default partitioner, keyed by the entity id as the README asks.
Nothing of Tidings' Python code writes those bytes; Python only hands the probe each record in
Avro's JSON encoding and the path of the schema version to write.

The events: one per pack, ``AppointmentBooked`` among them (a schema whose fingerprint Tidings
used to get wrong), and every event with a committed v2 written both as v1 (an older producer) and
as v2. Each must arrive as the mails the pack gives it, a v2 mail showing its new field, and the
worker must find every Java record on the partition it expects (no mispartitioned records).

The second test is the other side of the partition check: a record published to a partition its
key does not hash to is still mailed, and moves ``tidings_mispartitioned_events_total``.
"""

from __future__ import annotations

import collections
import io
import json
from typing import Any

from fastavro import json_writer

from streams.codecs.partitioning import default_partition
from streams.codecs.schemas import SchemaRepository
from streams.domain.evaluate import event_firings, field_at
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.domain.tenants import Tenant, TenantDirectory
from streams.settings import REPO_ROOT
from tests.integration.harness import Deployment
from tests.java import probe

CATALOG = Catalog.load()
TENANTS = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants")
SCHEMAS = SchemaRepository.load(REPO_ROOT / "schemas")
# (event type, version the Java producer writes); None: the newest.
JAVA_EVENTS = [
    ("tidings.advisors.AppointmentBooked", 1),
    ("tidings.advisors.CallbackRequested", 1),
    ("tidings.advisors.CallbackRequested", 2),
    ("tidings.charging.ChargeCardShipped", 1),
    ("tidings.charging.ChargeCardShipped", 2),
    ("tidings.storage.AccessPinChanged", 1),
    ("tidings.storage.AccessPinChanged", 2),
    ("tidings.tracker.AccountCreated", 1),
    ("tidings.tracker.AccountCreated", 2),
]


def _tenant_for(type_name: str) -> Tenant:
    for tenant in TENANTS:
        if event_firings(type_name, sample_event(CATALOG.samples, type_name, tenant.tenant_id), CATALOG, tenant):
            return tenant
    raise AssertionError(f"no example tenant mails {type_name}")


def _added_in(type_name: str, version: int) -> str | None:
    """The field a version added to its predecessor (the committed v2s add exactly one)."""
    if version < 2:
        return None
    old = {f["name"] for f in SCHEMAS.version(type_name, version - 1).parsed["fields"]}
    (new,) = [f["name"] for f in SCHEMAS.version(type_name, version).parsed["fields"] if f["name"] not in old]
    return new


def _avro_json(type_name: str, version: int, record: dict[str, Any]) -> str:
    out = io.StringIO()
    json_writer(out, SCHEMAS.version(type_name, version).parsed, [record])
    return out.getvalue().strip()


def test_events_from_the_java_reference_libraries_are_mailed(deployment: Deployment) -> None:
    jobs, expected = [], {}  # expected: recipient address -> (trigger key, text the mail must or must not show)
    for n, (type_name, version) in enumerate(JAVA_EVENTS):
        tenant = _tenant_for(type_name)
        schema = SCHEMAS.version(type_name, version)
        fields = {f["name"] for f in schema.parsed["fields"]}

        def unique(path: str, person: dict[str, Any], n: int = n) -> dict[str, Any]:
            return {**person, "email": deployment.email(f"java{n}.{path}")}

        event = sample_event(CATALOG.samples, type_name, tenant.tenant_id, recipient=unique)
        written = {k: v for k, v in event.items() if k in fields}  # what a producer on this version sends
        newest = _added_in(type_name, SCHEMAS.latest(type_name).version)
        shown = event[newest] if newest else None
        for firing in event_firings(type_name, event, CATALOG, tenant):
            expected[firing.recipient["email"]] = (firing.trigger.key, shown, version >= 2)
        jobs.append({
            "topic": deployment.topics.for_event(type_name),
            "schema": schema.path.relative_to(REPO_ROOT / "schemas").as_posix(),
            "key": str(field_at(event, CATALOG.key_path(type_name))),
            "record": _avro_json(type_name, version, written),
        })
    assert len(expected) >= len(JAVA_EVENTS)

    worker = deployment.start_worker()
    produced = [json.loads(line) for line in probe.run(
        "produce", deployment.bootstrap, str(REPO_ROOT / "schemas"), stdin="\n".join(json.dumps(j) for j in jobs) + "\n"
    ).splitlines()]
    assert len(produced) == len(jobs)
    # The Java client's default partitioner and Tidings' reimplementation agree on every key.
    assert all(p["partition"] == default_partition(p["key"], deployment.settings.partitions) for p in produced)

    mails = deployment.wait_for_mails(len(expected), timeout=180)
    counts = collections.Counter(m.destinations[0] for m in mails)
    assert {a: c for a, c in counts.items() if c != 1} == {}, "a mail arrived twice"
    assert set(counts) == set(expected)
    for mail in mails:
        trigger, shown, is_v2 = expected[mail.destinations[0]]
        assert mail.header("X-Tidings-Trigger") == trigger
        if shown is not None:
            # A v2 writer's new field reaches the mail; a v1 writer's record reads it as null.
            assert (str(shown) in mail.part("plain")) == is_v2, (trigger, is_v2)

    assert deployment.metric(worker, "tidings_dead_letters_total") == 0
    assert deployment.metric(worker, "tidings_mispartitioned_events_total") == 0
    consumed = deployment.metric(worker, "tidings_events_consumed_total")
    assert consumed == len(jobs)


def test_a_record_on_another_partition_than_its_key_gives_is_mailed_and_counted(deployment: Deployment) -> None:
    type_name = "tidings.charging.ChargeCardShipped"
    tenant = _tenant_for(type_name)
    event = sample_event(
        CATALOG.samples, type_name, tenant.tenant_id, recipient=lambda path, p: {**p, "email": deployment.email("misplaced")}
    )
    key = str(field_at(event, CATALOG.key_path(type_name)))
    partitions = deployment.settings.partitions
    wrong = (default_partition(key, partitions) + 1) % partitions
    topic = deployment.topics.for_event(type_name)
    worker = deployment.start_worker()

    deployment.publisher.publish(topic, type_name, event, key=key, partition=wrong)
    deployment.publisher.flush()

    deployment.wait_metric("tidings_mispartitioned_events_total", 1, topic=topic)
    # Counted, not rejected: the mail goes out all the same.
    assert [m.destinations[0] for m in deployment.wait_for_mails(1)] == [deployment.email("misplaced")]
    assert deployment.metric(worker, "tidings_mispartitioned_events_total", topic=topic) == 1
    assert "default partitioner" in worker.log_tail(200)
