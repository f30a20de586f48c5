"""The producer-side kit: publish a valid domain event the way Tidings expects it.

A producing service (and the demo, tests and benchmarks) calls ``EventPublisher.publish``: the
record is validated against the newest version of its schema in ``schemas/`` while it is
encoded (a missing or mistyped field raises ``InvalidEvent`` before anything is sent), then
produced with ``acks=all`` and idempotence on, keyed by the entity id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.errors import InvalidEvent


class EventPublisher:
    def __init__(self, bootstrap: str, schemas_dir: Path, *, linger_ms: int = 5) -> None:
        self.codec = SingleObjectCodec(SchemaRepository.load(schemas_dir))
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": linger_ms}
        )

    def encode(self, type_name: str, record: dict[str, Any]) -> bytes:
        try:
            return self.codec.encode(type_name, record)
        except KeyError:
            raise InvalidEvent(f"no schema named {type_name}", reason="unknown_event_type") from None
        except (ValueError, TypeError) as e:
            raise InvalidEvent(f"{type_name} does not match its schema: {e}") from e

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
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, **extra)
                break
            except BufferError:  # local queue full: let deliveries drain, then go on
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise TimeoutError(f"{remaining} events not acknowledged by the broker after {timeout}s")
