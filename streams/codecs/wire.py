"""Which wire format each inbound topic speaks, and decoding by topic.

Topics default to Avro single-object encoding against ``schemas/``; ``TIDINGS_WIRE_FORMATS``
switches individual topics (by their suffix, ``storage.bookings``) to the Confluent wire format
with ``TIDINGS_SCHEMA_REGISTRY_URL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from streams.codecs.avro import Decoded


class Decoder(Protocol):
    def decode(self, data: bytes | None) -> Decoded: ...


class TopicDecoders:
    def __init__(self, default: Decoder, by_topic: Mapping[str, Decoder] | None = None) -> None:
        self.default = default
        self.by_topic = dict(by_topic or {})

    def decode(self, topic: str, data: bytes | None) -> Decoded:
        return self.by_topic.get(topic, self.default).decode(data)
