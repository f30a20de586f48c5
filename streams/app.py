"""The composition root: build every component from the settings and wire the Faust app.

``create_app(settings)`` is the only place that chooses implementations (the SES sender, the
system clock); tests pass their own. Building the app reads the schema, pack, template and tenant
files and validates them, so a broken deployment fails at start-up, not on the first event.
Nothing connects to Kafka or SES until the worker starts.
"""

from __future__ import annotations

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
from streams.delivery.attachments import AttachmentStore, S3AttachmentStore
from streams.delivery.sender import EmailSender, create_sender
from streams.errors import ConfigurationError
from streams.ingest.pipeline import IngestPipeline
from streams.metrics import Metrics
from streams.rendering.render import Renderer
from streams.settings import Settings
from streams.tenants.model import TenantDirectory
from streams.topics import TopicNames, ensure_topics
from streams.triggers.rules import Catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Everything the agents need, built once per worker."""

    settings: Settings
    topics: TopicNames
    codec: SingleObjectCodec
    pipeline: IngestPipeline
    sender: EmailSender
    attachments: AttachmentStore
    metrics: Metrics
    clock: Clock


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
    pipeline = IngestPipeline(
        codec=codec,
        catalog=catalog,
        tenants=TenantDirectory.load(settings.tenants_dir),
        renderer=Renderer(settings.templates_dir),
        decoders=_decoders(settings, topics, codec),
    )
    return Runtime(
        settings=settings,
        topics=topics,
        codec=codec,
        pipeline=pipeline,
        sender=sender if sender is not None else create_sender(settings),
        attachments=attachments if attachments is not None else S3AttachmentStore(settings),
        metrics=metrics_module.create(),
        clock=clock if clock is not None else SystemClock(),
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
    """A Faust app that makes sure its topics exist before its consumer subscribes."""

    tidings: Runtime

    async def on_first_start(self) -> None:
        created = ensure_topics(self.tidings.settings, catalog=self.tidings.topics.catalog)
        if created:
            log.info("created topics: %s", ", ".join(created))
        await super().on_first_start()


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> TidingsApp:
    rt = runtime if runtime is not None else build_runtime(settings)
    app = TidingsApp(
        settings.app_id,
        broker=settings.broker_url,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        processing_guarantee=settings.processing_guarantee,
        broker_commit_interval=settings.commit_interval_seconds,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
    )
    app.tidings = rt

    from streams.delivery import agents as delivery_agents
    from streams.ingest import agents as ingest_agents

    ingest_agents.register(app, rt)
    delivery_agents.register(app, rt)

    async def metrics_page(web, request):  # type: ignore[no-untyped-def]
        return web.bytes(generate_latest(rt.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app.page("/metrics")(metrics_page)
    return app
