"""Which dead letters a re-drive picks, which of those may go back, and where each one goes.

Pure: records come in as plain values (``DeadLetter.from_record``), a decoder is handed in, and
nothing here talks to Kafka. ``streams/redrive/cli.py`` does the reading and the producing.

Headers are read defensively: anything may have been written to the dead-letter topic, so a
missing or garbled header gives a record that is shown and skipped, never an exception.

What may be re-driven (``verdict``) is an allow-list per stage. A reason is on it when the fix is
outside the record (a tenant configured, a schema or pack deployed, a template corrected, the
provider or an S3 object put right); a reason whose cause is the record itself (broken bytes, a
missing field, a bad address) would only fail again and is refused. So is anything whose value is
not what it was: a redacted copy (the mail would carry ``[redacted]`` instead of its link) and a
timer reference (``render`` stage on the firings topic), which is not an event at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.delivery.ledger import REDRIVE_HEADER

REDRIVE_FROM_HEADER = "tidings-redrive-from"  # the dead letter a republished record came from
MAX_HEADER_CHARS = 256  # a hostile header is cut here before it reaches the terminal

# stage -> reasons whose cause a fix outside the record can remove.
REDRIVABLE: Mapping[str, frozenset[str]] = {
    "ingest": frozenset({"unknown_schema", "unknown_event_type", "unknown_tenant", "internal_error"}),
    "render": frozenset({"render_failed", "internal_error"}),
    "state": frozenset({"bad_state", "internal_error"}),
    "deliver": frozenset({
        "rejected_by_provider", "attachment_missing", "attachment_too_large", "attachment_unsupported", "internal_error",
    }),
}
# Why the known reasons that are not on the list stay where they are.
REFUSED_BECAUSE = {
    "empty": "the record is empty",
    "not_avro": "the bytes are not Avro; they would fail again",
    "corrupt_body": "the Avro body is corrupt; it would fail again",
    "missing_field": "the event lacks a field; the producer must send a corrected event",
    "invalid_recipient": "the address is in the event; the producer must send a corrected event",
    "bad_tick": "ticks are superseded by the next one",
    "corrupt_firing": "a firing record is not an event",
}


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic: where it sits, its bytes and its headers, parsed."""

    partition: int
    offset: int
    timestamp: dt.datetime | None
    key: bytes | None
    value: bytes | None
    stage: str
    reason: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    message_id: str | None
    redacted: bool

    @classmethod
    def from_record(
        cls,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
    ) -> DeadLetter:
        h: dict[str, str] = {}
        for name, raw in headers or ():
            h[name] = (raw or b"").decode("utf-8", "replace")[:MAX_HEADER_CHARS]
        when = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.timezone.utc) if timestamp_ms and timestamp_ms > 0 else None
        return cls(
            partition=partition,
            offset=offset,
            timestamp=when,
            key=key,
            value=value,
            stage=h.get("tidings.stage", ""),
            reason=h.get("tidings.reason", ""),
            source_topic=h.get("tidings.source.topic", ""),
            source_partition=_non_negative_int(h.get("tidings.source.partition")),
            source_offset=_non_negative_int(h.get("tidings.source.offset")),
            message_id=h.get("tidings.message_id") or None,
            redacted=bool(h.get("tidings.redacted")),
        )


@dataclass(frozen=True)
class About:
    """What a dead letter's value says, as far as it decodes: enough to select and to show it."""

    tenant: str | None = None
    triggers: tuple[str, ...] = ()  # a mail's own trigger, or every event trigger of an event's type
    message_id: str | None = None  # a mail's id (deliver stage), from its value
    recipient: str | None = None  # masked, never the full address
    event_type: str | None = None
    feeds_state: bool = False  # the event updates entity state (timed triggers) when it is ingested


Decode = Callable[[str, bytes | None], tuple[str, Mapping[str, Any]]]  # (topic, bytes) -> (type, record)


def describe(dl: DeadLetter, decode: Decode, outbound_topic: str, for_event: Callable[[str], Iterable[str]],
             feeds: Callable[[str], bool]) -> About:
    """Decode a dead letter's value: a mail on the outbound topic, otherwise an event of its source topic."""
    deliver = dl.stage == "deliver"
    try:
        type_name, record = decode(outbound_topic if deliver else dl.source_topic, dl.value)
    except Exception:  # any garbage: the record is still shown and skipped, the run goes on
        return About()
    if deliver:
        return About(
            tenant=_text(record.get("tenant_id")),
            triggers=(f"{record.get('pack')}/{record.get('trigger')}",),
            message_id=_text(record.get("message_id")),
            recipient=mask_address(_text(record.get("to_address")) or ""),
            event_type=type_name,
        )
    envelope = record.get("envelope")
    tenant = _text(envelope.get("tenant_id")) if isinstance(envelope, Mapping) else None
    return About(tenant=tenant, triggers=tuple(for_event(type_name)), event_type=type_name, feeds_state=feeds(type_name))


@dataclass(frozen=True)
class Selection:
    """The operator's filters; an empty set matches anything."""

    stages: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    triggers: frozenset[str] = frozenset()
    message_ids: frozenset[str] = frozenset()
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def matches(self, dl: DeadLetter, about: About) -> bool:
        if self.stages and dl.stage not in self.stages:
            return False
        if self.reasons and dl.reason not in self.reasons:
            return False
        if self.tenants and about.tenant not in self.tenants:
            return False
        if self.triggers and not self.triggers.intersection(about.triggers):
            return False
        if self.message_ids and not self.message_ids.intersection({dl.message_id, about.message_id} - {None}):
            return False
        if (self.since or self.until) and dl.timestamp is None:
            return False
        if self.since and dl.timestamp and dl.timestamp < self.since:
            return False
        return not (self.until and dl.timestamp and dl.timestamp >= self.until)


def verdict(dl: DeadLetter, about: About, *, inbound: Iterable[str], outbound: str, partitions: int,
            reapply_state: bool = False) -> str | None:
    """None if the dead letter may be re-driven, else why not (one line for the operator)."""
    if dl.reason in REFUSED_BECAUSE:
        return REFUSED_BECAUSE[dl.reason]
    allowed = REDRIVABLE.get(dl.stage)
    if allowed is None:
        return f"stage {dl.stage or '(none)'!r} is not re-drivable"
    if dl.reason not in allowed:
        return f"reason {dl.reason or '(none)'!r} is not re-drivable at stage {dl.stage}"
    if dl.redacted:
        return "the dead letter holds a redacted copy: its secrets are gone, the producer must send the event again"
    if not dl.value:
        return "the dead letter has no value"
    if dl.source_partition is None or dl.source_partition >= partitions:
        return "no valid source partition header"
    if dl.stage == "deliver":
        if not dl.message_id:
            return "no message id header"
        if about.message_id != dl.message_id:
            return "the value is not the outbound record of its message id"
        if dl.source_topic != outbound:
            return f"source topic {dl.source_topic!r} is not this deployment's outbound topic"
        return None
    if dl.source_topic not in set(inbound):
        return f"source topic {dl.source_topic!r} is not an inbound topic (a timer reference or another deployment's)"
    if about.event_type is None:
        return "the value does not decode as an event"
    if dl.stage == "render" and about.feeds_state and not reapply_state:
        return ("the event already updated entity state; re-ingesting it would apply it again over newer events "
                "(--reapply-state to accept)")
    return None


@dataclass(frozen=True)
class Republish:
    """One record to produce: the dead letter's original bytes back to where they came from."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    dedupe: tuple[str, ...]  # one republish per mail (deliver) or per source record (earlier stages)


def republish(dl: DeadLetter, run_id: str, dead_letter_topic: str) -> Republish:
    """Where a re-drivable dead letter goes: its source topic and partition, marked with the run id."""
    assert dl.value is not None and dl.source_partition is not None  # verdict() checked both
    headers = [(REDRIVE_HEADER, run_id.encode()), (REDRIVE_FROM_HEADER, f"{dead_letter_topic}/{dl.partition}/{dl.offset}".encode())]
    if dl.stage == "deliver":
        assert dl.message_id is not None
        # Same partition: the ledger row of a message id lives in the partition of its outbound record.
        return Republish(dl.source_topic, dl.source_partition, dl.message_id.encode(), dl.value, headers,
                         ("mail", dl.message_id))
    # The source offset is unique per event; several mails of one event dead-lettered are one republish.
    return Republish(dl.source_topic, dl.source_partition, dl.key, dl.value, headers,
                     ("event", dl.source_topic, str(dl.source_partition), _source_offset(dl)))


def mask_address(address: str) -> str:
    """``jane.doe@example.org`` -> ``j***@example.org``: enough to recognise, not to mail."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return "***"
    return f"{local[0]}***@{domain[:MAX_HEADER_CHARS]}"


def _source_offset(dl: DeadLetter) -> str:
    if dl.source_offset is not None:
        return str(dl.source_offset)
    # Without the header the dead letter's own position stands in: at worst one event twice,
    # which the ledger dedupes.
    return f"dead-letter-{dl.partition}-{dl.offset}"


def _non_negative_int(text: str | None) -> int | None:
    try:
        value = int(text or "")
    except ValueError:
        return None
    return value if value >= 0 else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:MAX_HEADER_CHARS]
