"""Consumer groups of the worker roles, and the handover of offsets when a deployment splits.

A worker of ``TIDINGS_ROLE=stateless`` consumes the stateless inbound topics in a group of its
own, ``<app_id>-stateless`` (``group_settings``): it keeps no tables, so a rebalance of it
restores nothing, and the stateful workers' restores never hold it. Two roles in one group would
subscribe to different topics, and Faust's assignor would hand a stateless worker partitions it
has no agent for.

A new group starts at the topics' beginning (``consumer_auto_offset_reset="earliest"``). When a
deployment of ``all`` workers splits into the two roles, the stateless topics' history has
already been processed by the main group: read again, its mails would be skipped as duplicates
or stale (the delivery ledger, ``max_age``), but the whole retention would be decoded and
rendered once more. ``adopt_offsets`` therefore starts a stateless group that has no committed
offset where the main group stands, before the worker joins it. Kafka changes a group's offsets
only while it has no member, which is the case before the first stateless worker subscribes;
when two start at once, the second finds the first's offsets, or is refused because the first
already joined, and both mean the handover is done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.settings import Settings

log = logging.getLogger(__name__)

STATELESS_GROUP_SUFFIX = "-stateless"


def group_settings(settings: Settings) -> Settings:
    """The settings the worker's Faust app is built with: its app id is its consumer group."""
    if settings.role == "stateless":
        return settings.model_copy(update={"app_id": settings.app_id + STATELESS_GROUP_SUFFIX})
    return settings


def adopt_offsets(bootstrap: str, source: str, target: str, topics: Iterable[str], partitions: int,
                  timeout: float = 30.0) -> dict[tuple[str, int], int]:
    """Give ``target`` the committed offsets of ``source`` on ``topics`` if ``target`` has none.

    Returns what was written, ``(topic, partition) -> offset`` (empty when ``target`` already had
    offsets, when ``source`` has none, or when ``target`` has members by now).
    """
    wanted = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    if not wanted:
        return {}
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    if _committed(admin, target, wanted, timeout):
        return {}
    found = _committed(admin, source, wanted, timeout)
    if not found:
        return {}
    request = ConsumerGroupTopicPartitions(target, [TopicPartition(t, p, o) for (t, p), o in sorted(found.items())])
    try:
        done = admin.alter_consumer_group_offsets([request], request_timeout=timeout)[target].result(timeout)
    except KafkaException as e:
        errors = [e.args[0]]
    else:
        # The broker refuses partition by partition: the call itself succeeds.
        errors = [tp.error for tp in done.topic_partitions if tp.error]
    if errors:
        if all(_has_members(error) for error in errors):
            # Another worker of the role joined first: its group already reads from somewhere.
            log.info("offsets of %s not handed over: the group has members already (%s)", target, errors[0])
            return {}
        raise KafkaException(errors[0])
    log.info("group %s starts where %s stands on %s partitions", target, source, len(found))
    return found


def _has_members(error: KafkaError) -> bool:
    return error.code() in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS, KafkaError.NON_EMPTY_GROUP)


def _committed(admin: AdminClient, group: str, wanted: list[TopicPartition], timeout: float) -> dict[tuple[str, int], int]:
    request = ConsumerGroupTopicPartitions(group, wanted)
    result = admin.list_consumer_group_offsets([request], request_timeout=timeout)[group].result(timeout)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0 and not tp.error}
