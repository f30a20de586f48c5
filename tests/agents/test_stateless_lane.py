"""The stateless lane (``TIDINGS_ROLE=stateless``): event triggers with no table behind them.

Which topics it serves is derived from the packs; a worker of the lane renders their events'
mails without any table, and an event that updates an entity, published to one of its topics
by mistake, is dead-lettered whole instead of being half processed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from streams.delivery.outbox import OUTBOUND, OUTBOUND_PRIORITY
from streams.domain.rules import EventRule
from streams.domain.samples import sample_event
from streams.ingest.agents import IngestHandler
from streams.runtime.guard import Outcome
from streams.settings import Settings
from streams.topics import TopicNames
from streams.triggers.engine import TimedEngine
from tests.agents.conftest import NOW, TOPICS, FixedClock, Record, Runtime

TENANT = "lagerhaus-nord"
RESET = "tidings.storage.PasswordResetRequested"
BOOKING = "tidings.storage.BookingCreated"


def _handler(catalog: Any, tenants: Any, pipeline: Any, metrics: Any) -> IngestHandler:
    engine = TimedEngine(catalog, tenants, pipeline.renderer, metrics)
    return IngestHandler(pipeline, engine, None, FixedClock(), metrics, 4)


def test_the_lane_serves_exactly_the_topics_whose_events_update_no_entity(catalog: Any) -> None:
    topics = TopicNames.from_settings(Settings(topic_prefix="t."), catalog)
    stateless, stateful = set(topics.inbound_for("stateless")), set(topics.inbound_for("stateful"))
    assert stateless and stateful
    assert stateless | stateful == set(topics.inbound_for("all")) == set(topics.inbound)
    assert not stateless & stateful
    for event in catalog.event_types():
        topic = topics.for_event(event)
        assert (topic in stateless) == (not any(catalog.feeds(e) for e in catalog.event_types()
                                                 if topics.for_event(e) == topic)), event
    # Every mail of the priority lane (password resets, MFA, a changed PIN) comes from the lane,
    # so none of them waits for a stateful worker's restore.
    high = [t for t in catalog.event_triggers() if isinstance(t.rule, EventRule) and t.rule.priority == "high"]
    assert high
    for trigger in high:
        assert topics.for_event(trigger.rule.event) in stateless, trigger.key


def test_a_password_reset_is_rendered_by_a_worker_without_tables(codec: Any, catalog: Any, tenants: Any,
                                                                pipeline: Any, metrics: Any) -> None:
    event = sample_event(catalog.samples, RESET, TENANT, now=NOW)
    event["expires_at"] = NOW + dt.timedelta(hours=1)
    record = Record(topic=f"t.{catalog.topic_suffix_for(RESET)}", value=codec.encode(RESET, event))
    rt = Runtime("ingest")
    assert rt.run(_handler(catalog, tenants, pipeline, metrics), record) is Outcome.COMMITTED
    mails = rt.writer.on(TOPICS[OUTBOUND_PRIORITY])
    assert len(mails) == 1
    assert codec.decode(mails[0].value).record["trigger"] == "customer.password_reset"
    assert not rt.dead_letters()


def test_an_event_that_updates_an_entity_is_dead_lettered_whole_by_the_lane(codec: Any, catalog: Any, tenants: Any,
                                                                           pipeline: Any, metrics: Any) -> None:
    # A producer published a booking to the customers topic, which the lane serves: its
    # confirmation mail without its state update (and timers) would split the event.
    event = sample_event(catalog.samples, BOOKING, TENANT, now=NOW)
    record = Record(topic=f"t.{catalog.topic_suffix_for(RESET)}", value=codec.encode(BOOKING, event))
    rt = Runtime("ingest")
    assert rt.run(_handler(catalog, tenants, pipeline, metrics), record) is Outcome.DEAD_LETTERED
    assert not rt.writer.on(TOPICS[OUTBOUND]) and not rt.writer.on(TOPICS[OUTBOUND_PRIORITY])
    [letter] = rt.dead_letters()
    assert letter["tidings.reason"] == "stateful_event"
    assert "storage.bookings" in letter["tidings.detail"]
