"""The composition root: build every component from the settings and wire the Faust app.

``create_app(settings)`` is the only place that chooses implementations (the SES sender, the
system clock); tests pass their own. Building the app reads the schema, pack and template files
and validates them, so a broken deployment fails at start-up, not on the first event.
Nothing connects to Kafka or SES until the worker starts.

Tenants come from the compacted tenants topic, not from files: at start the worker reads the whole
topic (``TenantFeed``) before its agents consume, then keeps following it, so a tenant published
with ``tidings-tenants publish`` applies to the next event without a restart. The suppression list
is read and followed the same way from ``<prefix>suppressions`` (``SuppressionFeed``), so the
sender checks every mail against the whole list (``rt.suppressions``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass

from streams import health as health_module
from streams import metrics as metrics_module
from streams import observe
from streams.clock import Clock, SystemClock
from streams.codecs.avro import SingleObjectCodec
from streams.codecs.confluent import ConfluentCodec
from streams.codecs.schemas import SchemaRepository
from streams.codecs.wire import TopicDecoders
from streams.customers.feed import CustomerStatusFeed, customer_feeds
from streams.delivery.attachments import AttachmentStore, S3AttachmentStore
from streams.delivery.quota import POLL_INTERVAL_SECONDS as QUOTA_POLL_SECONDS
from streams.delivery.quota import quota_poller
from streams.delivery.sender import EmailSender, create_sender
from streams.domain.customers import InactiveCustomers
from streams.domain.rules import Catalog
from streams.domain.tenants import Tenant, TenantDirectory
from streams.domain.token import TokenSigner
from streams.errors import ConfigurationError
from streams.ingest.pipeline import IngestPipeline
from streams.metrics import Metrics
from streams.outcomes import Rejection
from streams.rendering.budget import RenderBudget
from streams.rendering.render import Renderer
from streams.runtime.app import TidingsApp, Wiring, new_app
from streams.runtime.groups import adopt_offsets, group_settings
from streams.settings import Settings
from streams.suppression.feed import SuppressionFeed, SuppressionWriter
from streams.suppression.model import SuppressionList
from streams.tenants.feed import TenantFeed
from streams.tenants.validate import safe_pack_problems
from streams.topics import TopicNames, ensure_topics
from streams.triggers.engine import TimedEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Everything the agents need, built once per worker."""

    settings: Settings
    topics: TopicNames
    codec: SingleObjectCodec
    pipeline: IngestPipeline
    tenants: TenantDirectory  # live: kept up to date from the tenants topic by tenant_feed
    tenant_feed: TenantFeed
    sender: EmailSender
    attachments: AttachmentStore
    metrics: Metrics
    clock: Clock
    timed: TimedEngine
    suppressions: SuppressionList  # live: kept up to date from the suppressions topic by suppression_feed
    suppression_feed: SuppressionFeed
    suppression_writer: SuppressionWriter
    unsubscribe_tokens: TokenSigner | None  # None: no TIDINGS_UNSUBSCRIBE_SECRET, no one-click links
    customer_feeds: tuple[CustomerStatusFeed, ...] = ()  # issue 15: keep pipeline.inactive and timed.inactive live


def build_runtime(
    settings: Settings,
    *,
    sender: EmailSender | None = None,
    attachments: AttachmentStore | None = None,
    clock: Clock | None = None,
) -> Runtime:
    schemas = SchemaRepository.load(settings.schemas_dir)
    catalog = Catalog.load()
    missing = [name for name in catalog.event_types() if not schemas.has(name)]
    if missing:
        raise ConfigurationError(f"packs route event types with no schema in {settings.schemas_dir}: {missing}")
    _check_ledger_retention(settings, catalog)
    codec = SingleObjectCodec(schemas)
    topics = TopicNames.from_settings(settings, catalog)
    tenants = TenantDirectory()
    metrics = metrics_module.create()
    secret = settings.unsubscribe_secret
    tokens = TokenSigner(secret.get_secret_value()) if secret is not None else None
    renderer = Renderer(settings.templates_dir, unsubscribe_tokens=tokens, budget=RenderBudget.from_settings(settings))
    suppressions = SuppressionList()
    inactive = InactiveCustomers()
    pipeline = IngestPipeline(
        codec=codec,
        catalog=catalog,
        tenants=tenants,
        renderer=renderer,
        decoders=_decoders(settings, topics, codec),
        inactive=inactive,
    )

    def servable(tenant: Tenant) -> list[tuple[str, str]]:
        """The checks ``tidings-tenants publish`` runs, against this worker's packs and templates."""
        problems = safe_pack_problems(tenant, catalog, settings.templates_dir)
        if tokens is None and tenant.unsubscribe is not None and tenant.unsubscribe.base_url:
            problems.append(("unsubscribe.base_url", "this worker has no TIDINGS_UNSUBSCRIBE_SECRET to sign one-click links with"))
        return problems

    return Runtime(
        settings=settings,
        topics=topics,
        codec=codec,
        pipeline=pipeline,
        tenants=tenants,
        tenant_feed=TenantFeed(settings.kafka_bootstrap, topics.tenants, tenants, check=servable, metrics=metrics),
        sender=sender if sender is not None else create_sender(settings),
        attachments=attachments if attachments is not None else S3AttachmentStore(settings),
        metrics=metrics,
        clock=clock if clock is not None else SystemClock(),
        timed=TimedEngine(catalog, tenants, renderer, metrics, max_fires_per_tick=settings.max_fires_per_tick, inactive=inactive),
        suppressions=suppressions,
        suppression_feed=SuppressionFeed(settings.kafka_bootstrap, topics.suppressions, suppressions, metrics=metrics),
        suppression_writer=SuppressionWriter(settings.kafka_bootstrap, topics.suppressions),
        unsubscribe_tokens=tokens,
        customer_feeds=customer_feeds(settings.kafka_bootstrap, topics, pipeline.decoders, inactive, metrics),
    )


def _check_ledger_retention(settings: Settings, catalog: Catalog) -> None:
    """The ledger must remember an id longer than any event that could send it may be re-read
    (DESIGN invariant 10): longer than every trigger's max_age and than the firings topic keeps
    its records."""
    from streams.domain.rules import EventRule
    from streams.topics import FIRINGS_RETENTION

    ages = [t.rule.age_limit for t in catalog.triggers() if isinstance(t.rule, EventRule)]
    longest = max([*ages, FIRINGS_RETENTION])
    if dt.timedelta(days=settings.ledger_retention_days) <= longest:
        raise ConfigurationError(
            f"TIDINGS_LEDGER_RETENTION_DAYS={settings.ledger_retention_days} must be longer than the longest "
            f"max_age of a trigger or the firings topic's retention ({longest}): a re-read event could send twice"
        )


def _decoders(settings: Settings, topics: TopicNames, codec: SingleObjectCodec) -> TopicDecoders:
    unknown = sorted(set(settings.wire_formats) - set(topics.catalog.topic_suffixes()))
    if unknown:
        raise ConfigurationError(f"TIDINGS_WIRE_FORMATS names topics no pack has: {unknown}")
    confluent = [suffix for suffix, fmt in settings.wire_formats.items() if fmt == "confluent"]
    if not confluent:
        return TopicDecoders(codec)
    if not settings.schema_registry_url:
        raise ConfigurationError(f"topics {confluent} use the Confluent wire format: set TIDINGS_SCHEMA_REGISTRY_URL")
    registry = ConfluentCodec.for_url(settings.schema_registry_url, codec.schemas)
    return TopicDecoders(codec, {f"{topics.prefix}{suffix}": registry for suffix in confluent})


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> TidingsApp:
    """The worker: every stage's handler of its role registered under the runtime's guard (``streams/runtime/``)."""
    from streams.delivery.outbox import DELIVERY_STATUS, OUTBOUND, OUTBOUND_PRIORITY
    from streams.ingest.agents import IngestHandler

    rt = runtime if runtime is not None else build_runtime(settings)
    m, topics = rt.metrics, rt.topics
    role, group = settings.role, group_settings(settings)
    app = new_app(group)

    async def before_agents() -> None:
        created = ensure_topics(rt.settings, catalog=topics.catalog)
        if created:
            log.info("created topics: %s", ", ".join(created))
        if role == "stateless":
            await asyncio.get_running_loop().run_in_executor(
                None, adopt_offsets, settings.kafka_bootstrap, settings.app_id, group.app_id, topics.stateless,
                settings.partitions,
            )
        health.topics_ready = True
        rt.tenant_feed.start()
        rt.suppression_feed.start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, rt.tenant_feed.wait_caught_up, rt.settings.tenants_catch_up_seconds)
        await loop.run_in_executor(None, rt.suppression_feed.wait_caught_up, rt.settings.suppressions_catch_up_seconds)
        for feed in rt.customer_feeds:
            feed.start()
            await loop.run_in_executor(None, feed.wait_caught_up, rt.settings.tenants_catch_up_seconds)
        if not len(rt.tenants):
            log.warning(
                "the tenants topic %s holds no tenant: every event is dead-lettered unknown_tenant until one is "
                "published (tidings-tenants publish deploy/tenants/)", topics.tenants,
            )

    async def after_stop() -> None:
        close = getattr(rt.sender, "close", None)  # the lean SES client's pooled connections
        if close is not None:
            await close()
        rt.tenant_feed.stop()
        rt.suppression_feed.stop()
        rt.suppression_writer.close()
        for feed in rt.customer_feeds:
            feed.stop()

    app.before_agents, app.after_stop = before_agents, after_stop

    def dead_lettered(rejection: Rejection) -> None:
        m.failures.labels(rejection.stage, rejection.reason).inc()
        m.dead_letters.labels(rejection.stage, rejection.reason).inc()
        m.dead_letter_topic_records.labels(rejection.reason).inc()

    wiring = Wiring(
        app,
        group,
        outputs={
            OUTBOUND: topics.outbound,
            OUTBOUND_PRIORITY: topics.outbound_priority,
            DELIVERY_STATUS: topics.delivery_status,
        },
        dead_letter_topic=topics.dead_letter,
        on_dead_letter=dead_lettered,
        count=lambda stage, outcome: m.record_outcomes.labels(stage, outcome.value).inc(),
        reports=frozenset({DELIVERY_STATUS}),
    )
    feeds = [rt.tenant_feed, rt.suppression_feed, *rt.customer_feeds]
    health = health_module.register(wiring, {feed.topic: health_module.caught_up(feed) for feed in feeds})
    if role == "stateless":
        # Event triggers only: no table, so nothing to restore (streams/runtime/groups.py).
        ingest = IngestHandler(rt.pipeline, rt.timed, None, rt.clock, m, settings.partitions, queued_status=settings.queued_status)
        wiring.agent("ingest", topics.inbound_for(role), "tidings.ingest", ingest)
    else:
        _stateful_stages(wiring, rt, settings)
    observer = observe.register(
        wiring, m, ready=lambda: health.readiness().ready, earliest_due=rt.timed.index.earliest_any,
        now=lambda: rt.clock.now().timestamp(),
    )
    wiring.metrics_page(m.registry, before=observer.refresh)
    return app


def _stateful_stages(wiring: Wiring, rt: Runtime, settings: Settings) -> None:
    """Everything but the stateless lane: entity state, timers, delivery, feedback."""
    from streams.delivery.agents import Sender
    from streams.ingest.agents import IngestHandler
    from streams.suppression import web as suppression_web
    from streams.suppression.agents import FeedbackHandler
    from streams.triggers.agents import FiringsHandler, TickHandler, tick_value

    m, topics = rt.metrics, rt.topics
    tables = wiring.tables(topics.catalog.tables())

    # Ingest: the inbound domain topics of the role (all of them, or the stateful ones).
    ingest = IngestHandler(rt.pipeline, rt.timed, tables, rt.clock, m, settings.partitions, queued_status=settings.queued_status)
    wiring.agent("ingest", topics.inbound_for(settings.role), "tidings.ingest", ingest)

    # Timed triggers: ticks decide, firings render.
    tick = TickHandler(
        rt.timed, tables, m,
        max_fires_per_tick=settings.max_fires_per_tick,
        max_record_bytes=settings.max_record_bytes,
        send_firings=wiring.send_soon_to(topics.firings),
        expire_ledger=wiring.ledger_expiry().sweep,
    )
    wiring.on_assigned(lambda assignment: tick.invalidate())
    wiring.on_revoked(tick.invalidate)
    wiring.agent("tick", [topics.ticks], "tidings.ticks", tick)
    firings = FiringsHandler(rt.timed, rt.pipeline, m, tick.idle, rt.clock, queued_status=settings.queued_status)
    wiring.agent("render", [topics.firings], "tidings.firings", firings)
    if settings.tick_source == "internal":
        publish = wiring.producer_for(topics.ticks)

        async def publish_ticks() -> None:
            value = tick_value(rt.clock.now())
            for p in range(settings.partitions):
                await publish(p, value)

        wiring.every(settings.tick_interval_seconds, publish_ticks, name="tidings.ticker", on_leader=True)

    # Delivery: both lanes share one sender (its pacer, permits and hold).
    sender = Sender(
        settings=settings,
        decode=rt.codec.decode,
        encode=rt.codec.encode,
        client=rt.sender,
        attachments=rt.attachments,
        ledger=wiring.ledger(),
        suppressions=rt.suppressions,
        watch=wiring.commits,
        metrics=m,
        clock=rt.clock,
    )
    wiring.on_assigned(lambda assignment: sender.share_quota(len({p for t, p in assignment if t == topics.outbound})))
    wiring.on_revoked(wiring.commits.release_all)
    concurrency = settings.sender_in_flight
    wiring.agent("deliver", [topics.outbound_priority], "tidings.deliver_priority", sender.priority, concurrency=concurrency,
                 urgent=True)
    wiring.agent("deliver", [topics.outbound], "tidings.deliver", sender.outbound, concurrency=concurrency)

    # A write waited for longer than a commit cycle was missed by the regular commits. Not less
    # than 0.1 s: with a commit every 40 ms, a commit under load outlasts its interval, and
    # committing its partitions a second time beside it only adds transactions.
    stale_after = max(settings.commit_interval_seconds, 0.1)

    async def commit_waiting() -> None:
        # Ledger writes whose partition's offsets cannot move (every record of it waiting) are
        # committed on their own, so the permits they hold come back (streams/runtime/commits.py).
        watch = wiring.commits
        stale = watch.waiting_longer_than(stale_after)
        if stale:
            upto = watch.snapshot()
            watch.committed(await wiring.commit_waiting(stale, topics.outbound), upto)

    wiring.every(stale_after, commit_waiting, name="tidings.commit_waiting_outcomes")

    # Suppression feedback: SES events and unsubscribes.
    feedback = FeedbackHandler(
        ses_events_topic=topics.ses_events,
        decode=rt.codec.decode,
        tenants=rt.tenants,
        suppressions=rt.suppressions,
        writer=rt.suppression_writer,
        metrics=m,
        clock=rt.clock,
    )
    wiring.agent("feedback", [topics.ses_events, topics.unsubscribes], "tidings.feedback", feedback)

    suppression_web.register(wiring, rt)
    poll_quota = quota_poller(rt.sender, m)
    if poll_quota is not None:
        wiring.every(QUOTA_POLL_SECONDS, poll_quota, name="tidings.ses_quota")
