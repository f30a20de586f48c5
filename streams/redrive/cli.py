"""``tidings-redrive``: send dead-lettered records back through the pipeline after a fix.

    tidings-redrive --stage deliver --reason rejected_by_provider --since 2026-11-24T08:00Z   # dry run
    tidings-redrive --stage deliver --reason rejected_by_provider --since 2026-11-24T08:00Z --yes

A dry run is the default: it lists what would go back (message id, tenant, trigger, reason, when,
the recipient masked) and changes nothing. ``--yes`` republishes.

The dead-letter topic is read with a plain consumer, assigned to every partition without joining
a group or committing anything, from the beginning (or ``--since``, through offsets-for-times) to
the end it had when the run started, ``read_committed``. Each selected, re-drivable dead letter
goes back byte for byte to the topic and partition it was read from, with the ``tidings-redrive``
header set to this run's id:

- a mail (``deliver`` stage) to the outbound topic, keyed by its message id. The sender sends it
  only if its ledger entry is FAILED (or missing); a SENT id is never sent again
  (``streams/delivery/policy.py``). Re-running a re-drive therefore sends nothing twice.
- an event (``ingest``, ``render``, ``state``) to its inbound topic. It is processed as if new;
  its mails have the same deterministic ids, so the ledger skips every mail already sent (and,
  since the rendered records carry no re-drive header, every one that FAILED: re-drive those from
  their own deliver-stage dead letters).

Records are produced with idempotence, in dead-letter order, and every one is acknowledged by the
broker before the run reports success; otherwise it exits 1.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from streams.redrive.selection import About, DeadLetter, Republish, Selection, describe, republish, verdict
from streams.settings import Settings
from streams.topics import TopicNames

EXIT_OK, EXIT_ERROR = 0, 1
POLL_SECONDS = 0.5
# Critical only: librdkafka logs every failed connection attempt (dozens a second); what matters
# reaches the operator as this command's own error line.
LIBRDKAFKA_LOG_LEVEL = 2


class RedriveError(Exception):
    """The run could not read or republish what it selected."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    topics = TopicNames.from_settings(settings)
    run_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    selection = Selection(
        stages=frozenset(args.stage), reasons=frozenset(args.reason), tenants=frozenset(args.tenant),
        triggers=frozenset(args.trigger), message_ids=frozenset(args.message_id), since=args.since, until=args.until,
    )
    out = sys.stdout
    try:
        plan, skipped, selected = _plan(settings, topics, selection, run_id, args, out)
        verb = "republishing" if args.yes else "dry run, would republish"
        print(f"tidings-redrive {run_id}: selected {selected}, {verb} {len(plan)}, skipped {sum(skipped.values())}", file=out)
        for why, count in skipped.most_common():
            print(f"  skipped {count}: {why}", file=out)
        if not args.yes:
            if plan:
                print("nothing was republished; add --yes to republish", file=out)
            return EXIT_OK
        delivered = _produce(settings, plan, args.timeout)
    except RedriveError as e:
        print(f"tidings-redrive: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    by_stage = collections.Counter(stage for stage, _ in plan)
    print(f"republished {delivered} ({', '.join(f'{s} {n}' for s, n in sorted(by_stage.items())) or 'none'}) "
          f"with header tidings-redrive={run_id}", file=out)
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tidings-redrive", description=__doc__.split("\n\n")[0],
                                epilog="Filters repeat (--stage deliver --stage render) and combine with AND.")
    p.add_argument("--stage", action="append", default=[], choices=["ingest", "state", "render", "deliver", "tick"])
    p.add_argument("--reason", action="append", default=[], help="a tidings.reason code, e.g. rejected_by_provider")
    p.add_argument("--tenant", action="append", default=[])
    p.add_argument("--trigger", action="append", default=[], help="pack/trigger, e.g. storage/booking.created")
    p.add_argument("--message-id", action="append", default=[])
    p.add_argument("--since", type=_instant, help="dead-lettered at or after this instant (ISO 8601 with zone)")
    p.add_argument("--until", type=_instant, help="dead-lettered before this instant")
    p.add_argument("--limit", type=_positive, help="republish at most this many (the first, in dead-letter order)")
    p.add_argument("--reapply-state", action="store_true",
                   help="also re-ingest render-stage events that feed entity state (applies them again, out of order)")
    p.add_argument("--yes", action="store_true", help="republish; without it the run is a dry run")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds to read the topic and to deliver (default 60)")
    return p


def _plan(settings: Settings, topics: TopicNames, selection: Selection, run_id: str, args: argparse.Namespace,
          out: Any) -> tuple[list[tuple[str, Republish]], collections.Counter[str], int]:
    decode = _decoder(settings)
    catalog = topics.catalog
    plan: list[tuple[str, Republish]] = []
    seen: set[tuple[str, ...]] = set()
    skipped: collections.Counter[str] = collections.Counter()
    chosen = []
    for dl in read_dead_letters(settings, topics.dead_letter, args.since, args.timeout):
        about = describe(dl, decode, topics.outbound, lambda t: [tr.key for tr in catalog.for_event(t)],
                         lambda t: bool(catalog.feeds(t)))
        if selection.matches(dl, about):  # only the selected ones are kept in memory
            chosen.append((dl, about))
    # Partitions arrive interleaved; dead-letter order within each is the order of the originals.
    chosen.sort(key=lambda pair: (pair[0].partition, pair[0].offset))
    for dl, about in chosen:
        why = verdict(dl, about, inbound=topics.inbound, outbound=topics.outbound, partitions=settings.partitions,
                      reapply_state=args.reapply_state)
        if why is None:
            record = republish(dl, run_id, topics.dead_letter)
            if record.dedupe in seen:
                why = "already republished by this run (several dead letters of one mail or event)"
            elif args.limit is not None and len(plan) >= args.limit:
                why = f"over --limit {args.limit}"
            else:
                seen.add(record.dedupe)
                plan.append((dl.stage, record))
        print(_line(dl, about, why), file=out)
        if why is not None:
            skipped[why] += 1
    return plan, skipped, len(chosen)


def _line(dl: DeadLetter, about: About, why: str | None) -> str:
    # "mail": back to the sender, which sends it only if its ledger entry is FAILED (the CLI does
    # not read the ledger); "event": back to ingest, whose mails the ledger dedupes.
    action = "skip " if why else ("mail " if dl.stage == "deliver" else "event")
    fields = [
        action,
        f"dl {dl.partition}@{dl.offset}",
        dl.timestamp.isoformat(timespec="seconds") if dl.timestamp else "-",
        f"{dl.stage or '-'}/{dl.reason or '-'}",
        f"tenant={about.tenant or '?'}",
        f"trigger={','.join(about.triggers) or '?'}",
        f"message={dl.message_id or about.message_id or '-'}",
    ]
    if about.recipient:
        fields.append(f"to={about.recipient}")
    if why is None and dl.stage != "deliver" and about.feeds_state:
        fields.append("(updates entity state)")
    if why:
        fields.append(f"-- {why}")
    return _printable("  ".join(fields))


def read_dead_letters(settings: Settings, topic: str, since: dt.datetime | None, timeout: float) -> Iterator[DeadLetter]:
    """Every committed record of ``topic`` from ``since`` (or the start) to its end when the call began."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
        # librdkafka wants a group id; with assign() and no commits the group is never joined.
        "group.id": f"tidings-redrive-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "log_level": LIBRDKAFKA_LOG_LEVEL,
    })
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise RedriveError(f"topic {topic} does not exist (check TIDINGS_TOPIC_PREFIX and TIDINGS_KAFKA_BOOTSTRAP)")
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in metadata.partitions}
            starts = {p: 0 for p in ends}
            if since is not None:
                wanted = [TopicPartition(topic, p, int(since.timestamp() * 1000)) for p in ends]
                starts = {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition])
                          for tp in consumer.offsets_for_times(wanted, timeout=timeout)}
        except KafkaException as e:
            raise RedriveError(f"cannot read {topic}: {e}") from e
        pending = {p for p in ends if starts[p] < ends[p]}
        if not pending:
            return
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in pending])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise RedriveError(f"reading {topic} took more than {timeout:.0f}s; partitions {sorted(pending)} unfinished")
            for msg in consumer.consume(num_messages=500, timeout=POLL_SECONDS):
                p = msg.partition()
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(p)  # read_committed: the end is the last stable offset
                        continue
                    raise RedriveError(f"reading {topic}: {error}")
                offset = msg.offset()
                if p is None or offset is None:  # confluent-kafka types both Optional; a consumed record has them
                    raise RedriveError(f"reading {topic}: a record without a partition or offset")
                if p not in pending or offset >= ends[p]:
                    pending.discard(p)  # written after the run began: not this run's
                    continue
                if offset >= ends[p] - 1:
                    pending.discard(p)
                kind, ts = msg.timestamp()
                # confluent-kafka types headers as a dict or list of str/bytes values; a consumed record's are (str, bytes) pairs.
                yield DeadLetter.from_record(p, offset, ts, msg.key(), msg.value(), msg.headers())  # type: ignore[arg-type]
    finally:
        consumer.close()


def _produce(settings: Settings, plan: list[tuple[str, Republish]], timeout: float) -> int:
    """Produce every record, idempotently and in order, and wait until the broker acknowledged each."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,  # acks=all, ordered, no duplicates from the producer's own retries
        "log_level": LIBRDKAFKA_LOG_LEVEL,
    })
    errors: list[str] = []
    delivered = [0]

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
        else:
            delivered[0] += 1

    try:
        for _, record in plan:
            # confluent-kafka's stub wants list[tuple[str, str | bytes | None]]; list is invariant, so (str, bytes) pairs do not match.
            producer.produce(record.topic, key=record.key, value=record.value, partition=record.partition,
                             headers=record.headers, on_delivery=on_delivery)  # type: ignore[arg-type]
            producer.poll(0)
        left = producer.flush(timeout)
    except (KafkaException, BufferError) as e:
        raise RedriveError(f"producing failed after {delivered[0]} of {len(plan)}: {e}") from e
    if left or errors:
        raise RedriveError(
            f"{delivered[0]} of {len(plan)} republished; {left} not acknowledged within {timeout:.0f}s, "
            f"{len(errors)} failed{': ' + errors[0] if errors else ''}"
        )
    return delivered[0]


def _decoder(settings: Settings):
    """(topic, bytes) -> (type name, record), with each inbound topic's wire format."""
    from streams.codecs.avro import SingleObjectCodec
    from streams.codecs.schemas import SchemaRepository

    codec = SingleObjectCodec(SchemaRepository.load(settings.schemas_dir))
    by_topic: Mapping[str, Any] = {}
    if settings.wire_formats and settings.schema_registry_url:
        from streams.codecs.confluent import ConfluentCodec

        registry = ConfluentCodec.for_url(settings.schema_registry_url, codec.schemas)
        by_topic = {f"{settings.topic_prefix}{suffix}": registry
                    for suffix, kind in settings.wire_formats.items() if kind == "confluent"}

    def decode(topic: str, data: bytes | None) -> tuple[str, Mapping[str, Any]]:
        decoded = by_topic.get(topic, codec).decode(data)
        return decoded.type_name, decoded.record

    return decode


def _instant(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 instant") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no zone; write e.g. 2026-11-24T08:00:00+01:00 or ...Z")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _printable(text: str) -> str:
    # Tenant ids and trigger names come from dead letters, i.e. from anyone: no terminal escapes.
    return "".join(c if c.isprintable() else "?" for c in text)


if __name__ == "__main__":
    sys.exit(main())
