"""Fuzz every ingest topic: over a thousand bad records interleaved with valid events.

Bad records, drawn from a seeded generator so a failure can be replayed:

- random bytes (including empty), Confluent-framed bytes on a single-object topic,
- truncated Avro, Avro with a fingerprint no schema has, trailing garbage,
- valid Avro of a type no pack handles,
- valid events with an empty or unknown tenant, an empty entity id, or an invalid address.

Valid events (every event type of every pack, with hostile but legal text: CR/LF and header
look-alikes in names and in fields that reach subjects) are interleaved. The worker must never
stop; every bad record must be dead-lettered exactly once (an event whose every recipient is
invalid: once per mail, each naming its message id) with a machine-readable reason from the set
its kind allows; every valid event must become its mails, each exactly once.

Every fuzzed mail goes to a customer id of its own: the samples share customer ids, and a fuzzed
``CustomerDeactivated`` (a valid event) would otherwise silence every later mail to that sample
customer, rightly, before its address is ever checked.
The counts are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import collections
import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from streams.codecs.avro import MAGIC
from streams.domain.evaluate import event_firings, field_at
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from tests.integration.harness import Deployment
from tests.integration.test_every_event_trigger import _tenant_for

CATALOG = Catalog.load()
BAD_RECORDS = int(os.environ.get("TIDINGS_FUZZ_BAD", "1200"))
SEED = int(os.environ.get("TIDINGS_FUZZ_SEED", "20261123"))
HOSTILE = ["Eve\r\nBcc: victim@example.com", "Mallory\nSubject: free money", "Zoë\x00\x07", "=?utf-8?q?x?=\r\n\r\n<body>"]
BAD_ADDRESSES = ["no-at-sign", "two@@example.org", "a@", "@example.org", "spaces in@example.org", "x@-bad-.example"]


def _recipients(event: dict[str, Any], fn: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return fn(value) if {"id", "email"} <= value.keys() else {k: walk(v) for k, v in value.items()}
        return value
    return walk(event)


class Fuzzer:
    def __init__(self, deployment: Deployment, rng: random.Random) -> None:
        self.dep, self.rng = deployment, rng
        self.types = CATALOG.event_types()
        self.n = 0

    def valid(self) -> tuple[str, bytes, str, int]:
        """A valid event with hostile text; returns (topic, bytes, key, number of mails)."""
        self.n += 1
        type_name = self.rng.choice(self.types)
        tenant = _tenant_for(_pack_of(type_name))
        hostile = self.rng.choice(HOSTILE)
        n = self.n
        event = sample_event(CATALOG.samples, type_name, tenant.tenant_id)
        event = _recipients(
            event, lambda p: {**p, "id": f"{p['id']}-f{n}", "name": hostile, "email": self.dep.email(f"f{n}-{p['id']}".lower())}
        )
        for field in ("site_name", "unit_name", "subject", "title"):  # fields that may reach a subject line
            if isinstance(event.get(field), str):
                event[field] = f"{event[field]}\r\nX-Injected: {hostile}"
        mails = len(event_firings(type_name, event, CATALOG, tenant))
        key = str(field_at(event, CATALOG.key_path(type_name)))
        return self.dep.topics.for_event(type_name), self.dep.publisher.encode(type_name, event), key, mails

    def bad(self) -> tuple[str, bytes, str, set[str], int]:
        """A bad record: (topic, bytes, kind, reasons it may be dead-lettered with, dead letters expected)."""
        topic, value, kind, reasons = self._bad()
        copies = 1
        if kind == "bad_address":  # rejected per mail, not per event
            type_name, tenant = self._last
            copies = len(event_firings(type_name, self._last_event, CATALOG, tenant))
        return topic, value, kind, reasons, copies

    def _bad(self) -> tuple[str, bytes, str, set[str]]:
        type_name = self.rng.choice(self.types)
        topic = self.dep.topics.for_event(type_name)
        tenant = _tenant_for(_pack_of(type_name))
        good = sample_event(CATALOG.samples, type_name, tenant.tenant_id)
        self._last, self._last_event = (type_name, tenant), good
        encoded = self.dep.publisher.encode(type_name, good)
        kind = self.rng.choice(
            ["random", "confluent_framed", "truncated", "wrong_fingerprint", "trailing", "unknown_type",
             "empty_tenant", "unknown_tenant", "empty_entity", "bad_address"]
        )
        r = self.rng
        if kind == "random":
            return topic, r.randbytes(r.randint(0, 200)), kind, {"empty", "not_avro", "unknown_schema", "corrupt_body"}
        if kind == "confluent_framed":
            return topic, b"\x00" + r.randbytes(4) + r.randbytes(r.randint(0, 60)), kind, {"not_avro"}
        if kind == "truncated":
            return topic, encoded[: r.randint(10, len(encoded) - 1)], kind, {"corrupt_body"}
        if kind == "wrong_fingerprint":
            return topic, MAGIC + r.randbytes(8) + encoded[10:], kind, {"unknown_schema"}
        if kind == "trailing":
            return topic, encoded + r.randbytes(r.randint(1, 20)), kind, {"corrupt_body"}
        if kind == "unknown_type":
            return topic, self.dep.publisher.codec.encode("tidings.outbound.RenderedEmail", _rendered()), kind, {"unknown_event_type"}
        if kind == "empty_tenant":
            good["envelope"]["tenant_id"] = ""
            return topic, self.dep.publisher.encode(type_name, good), kind, {"missing_field"}
        if kind == "unknown_tenant":
            good["envelope"]["tenant_id"] = f"ghost-{r.randint(0, 9999)}"
            return topic, self.dep.publisher.encode(type_name, good), kind, {"unknown_tenant"}
        if kind == "empty_entity":
            path = CATALOG.key_path(type_name).split(".")
            holder = good
            for step in path[:-1]:
                holder = holder[step]
            holder[path[-1]] = ""
            return topic, self.dep.publisher.encode(type_name, good), kind, {"missing_field"}
        address = r.choice(BAD_ADDRESSES)
        self.n += 1
        n = self.n
        bad = _recipients(good, lambda p: {**p, "id": f"{p['id']}-f{n}", "email": address})
        return topic, self.dep.publisher.encode(type_name, bad), kind, {"invalid_recipient"}


def _pack_of(type_name: str) -> str:
    return CATALOG.topic_suffix_for(type_name).split(".")[0]


def _rendered() -> dict[str, Any]:
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    return {
        "message_id": "x", "tenant_id": "t", "pack": "p", "trigger": "t", "entity_id": "e", "locale": "en",
        "from_address": "a@b.example", "to_address": "c@d.example", "subject": "s", "html": "h", "text": "t",
        "source_event_id": "e", "source_topic": "t", "source_timestamp": now, "created_at": now,
    }


@pytest.mark.timeout(900)
def test_fuzzed_ingest_dead_letters_every_bad_record_and_delivers_every_valid_one(deployment: Deployment) -> None:
    rng = random.Random(SEED)
    fuzzer = Fuzzer(deployment, rng)
    deployment.start_worker()
    expected_bad: dict[str, tuple[str, set[str], int]] = {}
    valid_mails = valid_events = 0
    for i in range(BAD_RECORDS):
        topic, value, kind, reasons, copies = fuzzer.bad()
        key = f"bad-{i}"
        deployment.publisher.publish_raw(topic, value, key=key)
        expected_bad[key] = (kind, reasons, copies)
        if i % 5 == 0:
            topic, value, key, mails = fuzzer.valid()
            deployment.publisher.publish_raw(topic, value, key=key)
            valid_events += 1
            valid_mails += mails
    deployment.publisher.flush()

    dead = deployment.read_topic(deployment.topics.dead_letter, sum(c for _, _, c in expected_bad.values()), timeout=300)
    per_key = collections.Counter(m.key().decode() for m in dead)
    # A bad address in an event that only feeds entity state (a station registration) is no mail
    # yet: it is kept in the state and dead-lettered invalid_recipient if and when a timed mail to
    # it renders (unit tests of the engine), so it expects no dead letter here.
    assert per_key == {key: copies for key, (_, _, copies) in expected_bad.items() if copies}
    by_reason: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[str] = collections.Counter()
    for msg in dead:
        kind, allowed, _ = expected_bad[msg.key().decode()]
        reason = dict(msg.headers())["tidings.reason"].decode()
        assert reason in allowed, f"{kind} dead-lettered as {reason}"
        by_reason[reason] += 1
        by_kind[kind] += 1

    mails = deployment.wait_for_mails(valid_mails, timeout=300)
    counts = collections.Counter(m.message_id for m in mails)
    assert {k: n for k, n in counts.items() if n != 1} == {}
    assert len(mails) == valid_mails
    for mail in mails:
        for header in ("Bcc", "X-Injected"):
            assert mail.header(header) is None
    assert deployment.workers[0].process is not None and deployment.workers[0].process.poll() is None

    print(f"\nfuzz seed {SEED}: {len(expected_bad)} bad records, {valid_events} valid events -> {valid_mails} mails")
    print("  bad records by kind:   " + ", ".join(f"{k}={n}" for k, n in sorted(by_kind.items())))
    print("  dead letters by reason: " + ", ".join(f"{k}={n}" for k, n in sorted(by_reason.items())))
