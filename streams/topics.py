"""Every topic Tidings reads or writes, named once from the settings.

Inbound domain topics are one per aggregate of a pack (``<prefix>storage.bookings``), keyed by
entity id, with several event types each; the packs declare them (``streams/packs/*/pack.yaml``). Tidings creates missing topics at worker start (idempotent), with the
configured partition count.

Partition discipline. Every topic Tidings reads or writes has the same number of partitions, and a
record derived from an input on partition *p* is written to partition *p* of its output topic
(outbound, outbound-priority, dead-letter, delivery-status) and of the tables' changelogs. Two reasons:

- Faust's exactly-once mode runs one Kafka transaction per partition number of a co-partitioned
  topic group and commits it together with that partition's input offsets. A write to another
  partition joins another transaction, which commits on its own schedule: the input offset could
  commit while the output is still open, and a crash would then lose the output.
- State follows the entity: all events of an entity share its key, hence its inbound partition,
  hence its outbound partition and the ledger rows of its mails.

So an existing topic with a different partition count is refused at start-up, not tolerated.

Time reaches the tables the same way: the ticks topic (``<prefix>ticks``, one tick per partition
and interval, carrying ``now``) is co-partitioned with them, so the timers of partition *p* fire
in the transaction of a tick on partition *p* (``streams/triggers/agents.py``); their firing
records go to partition *p* of ``<prefix>firings``, where they are rendered.

Inbound topics whose events update no entity (``TopicNames.stateless``: account events such as
password resets, invoices ready, invitations) can be served by workers of their own
(``TIDINGS_ROLE=stateless``), a consumer group with no tables: their mails are written while the
stateful workers restore, and every mail of the priority lane comes from such a topic. The
partition discipline is the same in both groups.

The one exception is the tenants topic (``<prefix>tenants``): compacted, keyed by tenant id, one
JSON tenant per record, a tombstone (null value) removes a tenant. It is configuration, not a
stream of work: no agent consumes it, no transaction writes it, nothing derived from it is keyed
by its partitions. Every worker reads it whole, all partitions, from the beginning
(``streams/tenants/feed.py``), so its partition count is free; Tidings creates it with one
partition (a few hundred tenants are a few hundred small records) and accepts any count it finds.

Suppression (``streams/suppression/``) adds two inputs and one such compacted topic. SES events
(``<prefix>ses-events``, JSON as SES publishes it) and unsubscribes (``<prefix>unsubscribes``,
Avro ``tidings.feedback.Unsubscribed``) are inputs like the domain topics: co-partitioned, and
their dead letters go to the input's partition number. The suppressions they lead to go to
``<prefix>suppressions``, compacted, keyed ``<tenant>/<address>``, read whole by every worker like
the tenants topic (one partition, any count accepted). Its records are written *outside* the
transactions, acknowledged before the input is done: a key is not tied to the input's partition,
and a transaction of another partition number may not be this worker's. A crash in between
writes the same suppression again, which changes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from streams.domain.rules import Catalog
from streams.errors import ConfigurationError
from streams.settings import Settings


@dataclass(frozen=True)
class TopicNames:
    prefix: str
    inbound: tuple[str, ...]
    stateless: tuple[str, ...]  # the inbound topics whose events update no entity
    outbound: str
    outbound_priority: str
    dead_letter: str
    delivery_status: str
    tenants: str
    ticks: str
    firings: str
    ses_events: str
    unsubscribes: str
    suppressions: str
    catalog: Catalog

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog | None = None) -> TopicNames:
        catalog = catalog if catalog is not None else Catalog.load()
        p = settings.topic_prefix
        return cls(
            prefix=p,
            inbound=tuple(f"{p}{suffix}" for suffix in catalog.topic_suffixes()),
            stateless=tuple(f"{p}{suffix}" for suffix in catalog.stateless_topic_suffixes()),
            outbound=f"{p}outbound",
            outbound_priority=f"{p}outbound-priority",
            dead_letter=f"{p}dead-letter",
            delivery_status=f"{p}delivery-status",
            tenants=f"{p}tenants",
            ticks=f"{p}ticks",
            firings=f"{p}firings",
            ses_events=f"{p}ses-events",
            unsubscribes=f"{p}unsubscribes",
            suppressions=f"{p}suppressions",
            catalog=catalog,
        )

    def all(self) -> tuple[str, ...]:
        """The co-partitioned topics (every one with ``TIDINGS_PARTITIONS`` partitions); not the compacted ones."""
        return (
            *self.inbound, self.outbound, self.outbound_priority, self.dead_letter, self.delivery_status,
            self.ticks, self.firings, self.ses_events, self.unsubscribes,
        )

    def inbound_for(self, role: str) -> tuple[str, ...]:
        """The inbound topics a worker of ``role`` (``Settings.role``) consumes."""
        if role == "stateless":
            return self.stateless
        if role == "stateful":
            return tuple(t for t in self.inbound if t not in self.stateless)
        return self.inbound

    def outbound_for(self, priority: str) -> str:
        """Mails a person is waiting for travel on their own topic, so no backlog of others can queue them."""
        return self.outbound_priority if priority == "high" else self.outbound

    def for_event(self, type_name: str) -> str:
        """The inbound topic producers publish ``type_name`` to."""
        return f"{self.prefix}{self.catalog.topic_suffix_for(type_name)}"


# Ticks are worth nothing once processed (the next one supersedes them); firings only until their
# mails are rendered. Short retention keeps state snapshots in firings from lingering (least data).
FIRINGS_RETENTION = dt.timedelta(days=7)
TOPIC_CONFIG = {
    "ticks": {"retention.ms": str(60 * 60 * 1000)},
    "firings": {"retention.ms": str(int(FIRINGS_RETENTION.total_seconds() * 1000))},
    # Issue 15: every worker reads it whole at start, so a customer's latest status is kept for good.
    "charging.customers": {"cleanup.policy": "compact"},
}

# Read whole by every worker, never co-partitioned with anything: one partition is plenty.
TENANTS_TOPIC_PARTITIONS = 1
TENANTS_TOPIC_CONFIG = {"cleanup.policy": "compact"}
# The same for the suppressions: keyed <tenant>/<address>, written outside the transactions.
SUPPRESSIONS_TOPIC_PARTITIONS = 1
SUPPRESSIONS_TOPIC_CONFIG = {"cleanup.policy": "compact"}


def ensure_topics(settings: Settings, timeout: float = 30.0, catalog: Catalog | None = None) -> list[str]:
    """Create the topics that do not exist yet (the tenants topic compacted); returns the names created."""
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
    new = [
        NewTopic(n, settings.partitions, settings.replication_factor, config=TOPIC_CONFIG.get(n.removeprefix(names.prefix), {}))
        for n in names.all()
        if n not in existing
    ]
    # The tables' changelogs too, before the worker joins its group: Faust declares them itself,
    # but a changelog created after the first assignment is missing from it ("Ignoring missing
    # topic"), and a transactional write to it then has no transaction to join until the next
    # rebalance.
    new += [
        NewTopic(name, settings.partitions, settings.replication_factor, config={"cleanup.policy": "compact"})
        for name in changelog_names(settings, names.catalog)
        if name not in existing
    ]
    if names.tenants not in existing:
        new.append(_tenants_topic(names, settings))
    if names.suppressions not in existing:
        new.append(_suppressions_topic(names, settings))
    return _create(admin, new, timeout)


def changelog_names(settings: Settings, catalog: Catalog) -> list[str]:
    """The changelog topic of every table a worker keeps: entity state, timers, the ledger."""
    from streams.runtime.tables import LEDGER_TABLE, TIMERS_TABLE, changelog_topic

    return [changelog_topic(settings.app_id, t) for t in (*catalog.tables(), TIMERS_TABLE, LEDGER_TABLE)]


def ensure_tenants_topic(settings: Settings, timeout: float = 30.0) -> bool:
    """Create only the compacted tenants topic if it is missing (``tidings-tenants publish``); True if created."""
    from confluent_kafka.admin import AdminClient

    names = TopicNames.from_settings(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 4})
    if names.tenants in admin.list_topics(timeout=timeout).topics:
        return False
    return bool(_create(admin, [_tenants_topic(names, settings)], timeout))


def ensure_suppressions_topic(settings: Settings, timeout: float = 30.0) -> bool:
    """Create only the compacted suppressions topic if it is missing (``tidings-suppress``); True if created."""
    from confluent_kafka.admin import AdminClient

    names = TopicNames.from_settings(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 4})
    if names.suppressions in admin.list_topics(timeout=timeout).topics:
        return False
    return bool(_create(admin, [_suppressions_topic(names, settings)], timeout))


def _suppressions_topic(names: TopicNames, settings: Settings):
    from confluent_kafka.admin import NewTopic

    return NewTopic(
        names.suppressions, SUPPRESSIONS_TOPIC_PARTITIONS, settings.replication_factor, config=SUPPRESSIONS_TOPIC_CONFIG
    )


def _tenants_topic(names: TopicNames, settings: Settings):
    from confluent_kafka.admin import NewTopic

    return NewTopic(names.tenants, TENANTS_TOPIC_PARTITIONS, settings.replication_factor, config=TENANTS_TOPIC_CONFIG)


def _create(admin, new: list, timeout: float) -> list[str]:
    from confluent_kafka import KafkaException

    if not new:
        return []
    futures = admin.create_topics(new, operation_timeout=timeout)
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):  # another worker won the race: fine
                raise
    return created
