"""Every topic Tidings reads or writes, named once from the settings.

Inbound domain topics are one per aggregate of a pack (``<prefix>storage.bookings``), keyed by
entity id, with several event types each; the packs declare them (``streams/packs/*/pack.yaml``). Tidings creates missing topics at worker start (idempotent), with the
configured partition count.

Partition discipline. Every topic Tidings reads or writes has the same number of partitions, and a
record derived from an input on partition *p* is written to partition *p* of its output topic
(outbound, dead-letter) and of the tables' changelogs. Two reasons:

- Faust's exactly-once mode runs one Kafka transaction per partition number of a co-partitioned
  topic group and commits it together with that partition's input offsets. A write to another
  partition joins another transaction, which commits on its own schedule: the input offset could
  commit while the output is still open, and a crash would then lose the output.
- State follows the entity: all events of an entity share its key, hence its inbound partition,
  hence its outbound partition and the ledger rows of its mails.

So an existing topic with a different partition count is refused at start-up, not tolerated.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.errors import ConfigurationError
from streams.settings import Settings
from streams.triggers.rules import Catalog

@dataclass(frozen=True)
class TopicNames:
    prefix: str
    inbound: tuple[str, ...]
    outbound: str
    dead_letter: str
    catalog: Catalog

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog | None = None) -> TopicNames:
        catalog = catalog if catalog is not None else Catalog.load()
        p = settings.topic_prefix
        return cls(
            prefix=p,
            inbound=tuple(f"{p}{suffix}" for suffix in catalog.topic_suffixes()),
            outbound=f"{p}outbound",
            dead_letter=f"{p}dead-letter",
            catalog=catalog,
        )

    def all(self) -> tuple[str, ...]:
        return (*self.inbound, self.outbound, self.dead_letter)

    def for_event(self, type_name: str) -> str:
        """The inbound topic producers publish ``type_name`` to."""
        return f"{self.prefix}{self.catalog.topic_suffix_for(type_name)}"


def ensure_topics(settings: Settings, timeout: float = 30.0, catalog: Catalog | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    names = TopicNames.from_settings(settings, catalog)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 4})
    existing = admin.list_topics(timeout=timeout).topics
    for name in names.all():
        if name in existing and len(existing[name].partitions) != settings.partitions:
            raise ConfigurationError(
                f"topic {name} has {len(existing[name].partitions)} partitions but TIDINGS_PARTITIONS is "
                f"{settings.partitions}; every Tidings topic must have the same count (see streams/topics.py)"
            )
    missing = [n for n in names.all() if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(n, settings.partitions, settings.replication_factor) for n in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):  # another worker won the race: fine
                raise
    return created
