"""The producer-side kit: publish a valid domain event the way Tidings expects it.

From Python, a producing service (and the demo, tests and benchmarks) calls
``EventPublisher.publish``. The record is validated against the newest version of its schema in
``schemas/`` while it is encoded (a missing or mistyped field raises ``InvalidEvent`` before
anything is sent), then produced with ``acks=all`` and idempotence on, keyed by the entity id.
The wire format is Avro single-object encoding, or the Confluent format through a registry.

From a shell (``tidings-publish --help``)::

    tidings-publish --type tidings.storage.BookingCreated --key BK-1 event.json
    tidings-publish --type tidings.storage.BookingCreated --sample --tenant lagerhaus-nord

The topic follows from the event type (``<prefix><pack>.<aggregate>``, see the pack files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import Producer
from fastavro.schema import expand_schema

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.confluent import ConfluentCodec
from streams.codecs.jsonvalues import from_json
from streams.codecs.schemas import SchemaRepository
from streams.errors import InvalidEvent, TidingsError


class EventPublisher:
    def __init__(
        self,
        bootstrap: str,
        schemas_dir: Path,
        *,
        wire_format: Literal["single_object", "confluent"] = "single_object",
        registry: Any = None,
        linger_ms: int = 5,
    ) -> None:
        schemas = SchemaRepository.load(schemas_dir)
        self.codec = SingleObjectCodec(schemas)
        self._encoder: SingleObjectCodec | ConfluentCodec = self.codec
        if wire_format == "confluent":
            if registry is None:
                raise ValueError("the Confluent wire format needs a schema registry client or URL")
            self._encoder = (
                ConfluentCodec.for_url(registry, schemas) if isinstance(registry, str) else ConfluentCodec(registry, schemas)
            )
        # murmur2_random is Kafka's default partitioner (the Java client's): every producer of an entity,
        # in any language, must put its events on the same partition (streams/codecs/partitioning.py).
        self._config = {
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": linger_ms,
            "partitioner": "murmur2_random",
        }
        self._client: Producer | None = None

    @property
    def _producer(self) -> Producer:
        # Created on first use, so validating and encoding need no broker.
        if self._client is None:
            self._client = Producer(self._config)
        return self._client

    def encode(self, type_name: str, record: dict[str, Any]) -> bytes:
        if not self.codec.schemas.has(type_name):
            raise InvalidEvent(f"no schema named {type_name}", reason="unknown_event_type")
        try:
            return self._encoder.encode(type_name, record)
        except (ValueError, TypeError) as e:
            raise InvalidEvent(f"{type_name} does not match its schema: {e}") from e

    def encode_json(self, type_name: str, data: dict[str, Any]) -> bytes:
        """Encode an event given as JSON values (ISO dates and times as strings)."""
        if not self.codec.schemas.has(type_name):
            raise InvalidEvent(f"no schema named {type_name}", reason="unknown_event_type")
        schema = expand_schema(self.codec.schemas.latest(type_name).parsed)  # named types inlined
        return self.encode(type_name, from_json(schema, data))

    def publish(
        self, topic: str, type_name: str, record: dict[str, Any], *, key: str, partition: int | None = None
    ) -> None:
        self.publish_raw(topic, self.encode(type_name, record), key=key, partition=partition)

    def publish_raw(
        self, topic: str, value: bytes | None, *, key: str | bytes | None, partition: int | None = None
    ) -> None:
        """Produce bytes as they are (tests use it to publish garbage on purpose).

        ``partition`` overrides the key's partition; producers leave it alone, tests use it to
        put a record on every partition.
        """
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, **extra)
                break
            except BufferError:  # local queue full: let deliveries drain, then go on
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        if self._client is None:
            return
        remaining = self._producer.flush(timeout)
        if remaining:
            raise TimeoutError(f"{remaining} events not acknowledged by the broker after {timeout}s")


def main(argv: list[str] | None = None) -> int:
    from streams.domain.samples import sample_event
    from streams.settings import Settings
    from streams.topics import TopicNames

    parser = argparse.ArgumentParser(
        prog="tidings-publish", description="Validate a domain event against its schema and publish it to Kafka."
    )
    parser.add_argument("--type", required=True, help="full Avro name, e.g. tidings.storage.BookingCreated")
    parser.add_argument("--key", help="the entity id (Kafka key); defaults to the pack's entity field")
    parser.add_argument("file", nargs="?", type=Path, help="the event as JSON ('-' or nothing: standard input)")
    parser.add_argument("--sample", action="store_true", help="publish the pack's sample event instead of a file")
    parser.add_argument("--tenant", help="tenant id for --sample")
    parser.add_argument("--bootstrap", help="brokers (default: TIDINGS_KAFKA_BOOTSTRAP)")
    parser.add_argument("--confluent", metavar="REGISTRY_URL", help="use the Confluent wire format with this registry")
    parser.add_argument("--dry-run", action="store_true", help="validate and encode, print the size, send nothing")
    args = parser.parse_args(argv)

    settings = Settings()
    names = TopicNames.from_settings(settings)
    try:
        if args.sample:
            if not args.tenant:
                parser.error("--sample needs --tenant")
            event: dict[str, Any] = sample_event(names.catalog.samples, args.type, args.tenant)
        else:
            text = sys.stdin.read() if args.file in (None, Path("-")) else args.file.read_text(encoding="utf-8")
            event = json.loads(text)
        publisher = EventPublisher(
            args.bootstrap or settings.kafka_bootstrap,
            settings.schemas_dir,
            wire_format="confluent" if args.confluent else "single_object",
            registry=args.confluent,
        )
        data = publisher.encode(args.type, event) if args.sample else publisher.encode_json(args.type, event)
        topic = names.for_event(args.type)
        key = args.key or _entity_key(names, args.type, publisher, data)
        if args.dry_run:
            print(f"valid {args.type}: {len(data)} bytes for {topic} key={key}")
            return 0
        publisher.publish_raw(topic, data, key=key)
        publisher.flush()
        print(f"published {args.type} to {topic} key={key}")
        return 0
    except (TidingsError, KeyError, ValueError, json.JSONDecodeError) as e:
        print(f"tidings-publish: {getattr(e, 'detail', e)}", file=sys.stderr)
        return 2


def _entity_key(names: Any, type_name: str, publisher: EventPublisher, data: bytes) -> str:
    from streams.domain.evaluate import field_at

    try:
        path = names.catalog.key_path(type_name)
    except KeyError:
        raise KeyError(f"no trigger or entity says which field of {type_name} is the entity id; pass --key") from None
    record = (publisher._encoder.decode(data)).record
    return str(field_at(record, path))


if __name__ == "__main__":
    sys.exit(main())
