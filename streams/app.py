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
import logging
from dataclasses import dataclass

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import metrics as metrics_module
from streams.clock import Clock, SystemClock
from streams.codecs.avro import SingleObjectCodec
from streams.codecs.confluent import ConfluentCodec
from streams.codecs.wire import TopicDecoders
from streams.codecs.schemas import SchemaRepository
from streams.commits import CommitWatch
from streams.delivery.attachments import AttachmentStore, S3AttachmentStore
from streams.delivery.sender import EmailSender, create_sender
from streams.errors import ConfigurationError
from streams.ingest.pipeline import IngestPipeline
from streams.metrics import Metrics
from streams.rendering.render import Renderer
from streams.settings import Settings
from streams.suppression.feed import SuppressionFeed, SuppressionWriter
from streams.customers.feed import CustomerStatusFeed, customer_feeds
from streams.customers.model import InactiveCustomers
from streams.suppression.model import SuppressionList
from streams.suppression.token import TokenSigner
from streams.tenants.feed import TenantFeed
from streams.tenants.model import Tenant, TenantDirectory
from streams.tenants.validate import pack_problems
from streams.topics import TopicNames, ensure_topics
from streams.transport import TidingsTransport
from streams.triggers.engine import TimedEngine
from streams.triggers.rules import Catalog

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
    codec = SingleObjectCodec(schemas)
    topics = TopicNames.from_settings(settings, catalog)
    tenants = TenantDirectory()
    metrics = metrics_module.create()
    secret = settings.unsubscribe_secret
    tokens = TokenSigner(secret.get_secret_value()) if secret is not None else None
    renderer = Renderer(settings.templates_dir, unsubscribe_tokens=tokens)
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
        problems = list(pack_problems(tenant, catalog, settings.templates_dir))
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


class TidingsApp(faust.App):
    """A Faust app that makes sure its topics exist and its tenants are read before its consumer subscribes,
    and whose graceful stop always ends its exactly-once transactions cleanly (``streams.transport``)."""

    tidings: Runtime
    commits: CommitWatch  # fed by the consumer's commits (streams/transport.py)

    async def on_first_start(self) -> None:
        rt = self.tidings
        created = ensure_topics(rt.settings, catalog=rt.topics.catalog)
        if created:
            log.info("created topics: %s", ", ".join(created))
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
                "published (tidings-tenants publish deploy/tenants/)", rt.topics.tenants,
            )
        await super().on_first_start()

    def _new_transport(self) -> TidingsTransport:
        """Faust's aiokafka transport with a safe exactly-once shutdown (see ``streams.transport``)."""
        url = self.conf.broker_consumer[0]
        if url.scheme not in ("kafka", "aiokafka"):
            raise ConfigurationError(f"Tidings runs on Kafka (kafka://), not {url}")
        return TidingsTransport(self.conf.broker_consumer, self)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        self.tidings.tenant_feed.stop()
        self.tidings.suppression_feed.stop()
        self.tidings.suppression_writer.close()
        for feed in self.tidings.customer_feeds:
            feed.stop()


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> TidingsApp:
    rt = runtime if runtime is not None else build_runtime(settings)
    app = TidingsApp(
        settings.app_id,
        broker=settings.broker_url,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        processing_guarantee=settings.processing_guarantee,
        broker_commit_interval=settings.commit_interval_seconds,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        # No standby replicas: faust-streaming 0.15 seeks a standby changelog partition to a
        # missing (None) offset when it was not among the newly assigned ones, and its recovery
        # crashes ("Offset must be a positive integer"). A worker taking over a partition
        # restores it from the changelog instead (see the benchmark's restart figure).
        table_standby_replicas=0,
        # Faust refuses to recover a table whose local store is ahead of its changelog. Under
        # exactly-once that is normal after a crash: the store kept writes whose transaction was
        # aborted (streams/state/tables.py says which tables keep them and which restore).
        recovery_consistency_check=False,
    )
    app.tidings = rt
    app.commits = CommitWatch()

    from streams.delivery import agents as delivery_agents
    from streams.ingest import agents as ingest_agents
    from streams.state.tables import create_tables
    from streams.suppression import agents as suppression_agents
    from streams.suppression import web as suppression_web
    from streams.triggers import agents as trigger_agents

    tables = create_tables(app, settings, rt.topics.catalog)
    ingest_agents.register(app, rt, tables)
    trigger_agents.register(app, rt, tables)
    delivery_agents.register(app, rt)
    suppression_agents.register(app, rt)
    suppression_web.register(app, rt)

    async def metrics_page(web, request):  # type: ignore[no-untyped-def]
        return web.bytes(generate_latest(rt.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app.page("/metrics")(metrics_page)
    return app
