"""One frozen, typed settings object, read from ``TIDINGS_*`` environment variables.

Every knob of a worker lives here and nowhere else; code receives a ``Settings`` instance
instead of reading the environment. Construct it once at start-up (``Settings()``); a value
that does not parse fails there, naming the variable to set.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
# The sender's places for requests in flight when TIDINGS_SENDER_CONCURRENCY is unset (Settings.sender_in_flight).
MIN_SENDER_IN_FLIGHT = 16
IN_FLIGHT_SECONDS = 0.1
# Settings.producer_linger_seconds when TIDINGS_PRODUCER_LINGER_MS is unset.
LINGER_PAST_COMMIT_SECONDS = 0.01
AT_LEAST_ONCE_LINGER_SECONDS = 0.005
# The plain producer, whose records are visible at once (the leader's ticks), shares the linger:
# with a long commit interval the ticks would wait for it.
MAX_DERIVED_LINGER_SECONDS = 0.1


class Settings(BaseSettings):
    """Configuration of one Tidings worker."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", frozen=True, extra="forbid")

    app_id: str = Field("tidings", description="Faust app id: the consumer group and table prefix.")
    role: Literal["all", "stateful", "stateless"] = Field(
        "all",
        description="What this worker serves. all: everything. stateless: only the inbound topics whose events "
        "update no entity (password resets, invoices ready...; Catalog.stateless_topic_suffixes), in a consumer "
        "group of its own (<app_id>-stateless) with no tables, so it never waits for a restore. stateful: "
        "everything else (the other inbound topics, timers, delivery, feedback). Run stateful and stateless "
        "workers together, or all alone.",
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port] of the brokers.")
    topic_prefix: str = Field("tidings.", description="Prepended to every topic Tidings owns.")
    partitions: int = Field(4, ge=1, description="Partitions of every topic and table (they are co-partitioned).")
    replication_factor: int = Field(1, ge=1, description="Replicas of every topic Tidings creates (topics that exist are left as they are).")
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    commit_interval_seconds: float = Field(
        0.04,
        gt=0,
        description="How often offsets and the open transactions commit. Under exactly_once an outbound record is "
        "visible (to the sender, to any read_committed reader) only at a commit, so this is a floor on event-to-sent "
        "latency; the partitions' transactions commit concurrently (Faust's default is 2.8).",
    )
    producer_linger_ms: float | None = Field(
        None,
        ge=0,
        le=10_000,
        description="How long the producer gathers records into one request. Unset: under exactly_once a little "
        "longer than the commit interval (a record is visible only at the commit, which sends what lingers "
        "at once, so waiting for it costs no latency and makes one produce request per transaction; at most "
        "100 ms), 5 ms under at_least_once (records are visible as soon as written). See producer_linger_seconds.",
    )
    producer_batch_bytes: int = Field(
        786_432,
        ge=16_384,
        description="The most bytes the producer gathers into one record batch for a partition (aiokafka's "
        "max_batch_size, Faust's default 16 KiB: three rendered mails). Larger batches make far fewer produce "
        "requests under load; a batch is still sent after the linger or at a commit, whatever its size. At most "
        "max_record_bytes: the broker refuses a batch over its message.max.bytes.",
    )
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4",
        description="How the worker's producer compresses record batches (the mails, their statuses, table rows). "
        "A batch of rendered mails, mostly HTML, compresses more than tenfold: fewer bytes through the brokers, "
        "their disks and replicas, and every reader of the outbound topic, for a few percent of the worker's CPU.",
    )
    producer_retry_backoff_ms: int = Field(
        20,
        ge=1,
        le=10_000,
        description="How long a producer waits before it retries a request the broker refused for now. Under "
        "exactly_once the common case is a transaction's first request arriving while the broker still ends the "
        "previous one (CONCURRENT_TRANSACTIONS): the client's default of 100 ms made every such commit 100 ms late.",
    )
    fetch_min_bytes: int = Field(
        65536,
        ge=1,
        description="How much the broker gathers before it answers a fetch (or fetch_max_wait_ms passes): fewer "
        "fetch rounds over every assigned partition at a steady event rate.",
    )
    fetch_max_wait_ms: int = Field(
        10,
        ge=1,
        le=1500,
        description="The longest the broker holds a fetch for fetch_min_bytes: added latency at low rates, "
        "and the polling rate of an idle worker.",
    )
    fetch_busy_max_wait_ms: int = Field(
        100,
        ge=1,
        le=1500,
        description="fetch_max_wait_ms while the worker is behind (the last batch it took from the fetcher was full, "
        "fetch_max_records), with a fetch_min_bytes of 1: the fetches then hold only partitions with nothing to read, "
        "whose polls cost CPU, and the broker answers as soon as one of them (a priority topic's) gets a record.",
    )
    fetch_quiet_max_wait_ms: int = Field(
        100,
        ge=1,
        le=1500,
        description="fetch_max_wait_ms after a fetch whose answer held no record, with a fetch_min_bytes of 1: the next "
        "fetch covers partitions that had nothing for a whole fetch_max_wait_ms, and the broker answers it as soon as "
        "one gets a record. At or below fetch_max_wait_ms: off (the steady settings after an empty answer too).",
    )
    fetch_idle_max_wait_ms: int = Field(
        500,
        ge=1,
        le=1500,
        description="fetch_max_wait_ms once the worker has had no record for a fifth of a second, with a fetch_min_bytes of 1: "
        "the broker answers as soon as a record arrives, and an idle worker polls this often.",
    )
    fetch_max_records: int = Field(
        200,
        ge=1,
        le=100_000,
        description="The most records of non-urgent topics a worker hands to its agents before it fetches again: a "
        "record of the priority topic, fetched first, waits at most for a batch this large (about 0.2 s at 1,000 "
        "mails/s).",
    )
    session_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long the group waits for a silent worker before its partitions move (Faust's default is 60): "
        "also how long a restarted worker waits to rejoin after a crash.",
    )
    wire_formats: dict[str, Literal["single_object", "confluent"]] = Field(
        default_factory=dict,
        description='Per inbound topic suffix, e.g. {"storage.bookings": "confluent"}; default single_object.',
    )
    schema_registry_url: str | None = Field(None, description="Confluent Schema Registry, for confluent topics.")

    data_dir: Path = Field(REPO_ROOT / ".tidings" / "data", description="RocksDB state of this worker.")
    # RocksDB's defaults (Faust: a 2 GiB block cache and 3 x 64 MiB write buffers) apply per
    # partition *and* per table; with seven tables of four partitions that is tens of GiB of
    # potential memory. These bound it: cache + buffers per table partition.
    state_block_cache_mb: int = Field(8, ge=1, description="RocksDB block cache per table partition, MiB.")
    state_write_buffer_mb: int = Field(4, ge=1, description="RocksDB write buffer per table partition (two of them), MiB.")

    tick_source: Literal["internal", "external"] = Field(
        "internal",
        description="internal: the leader worker publishes a tick per partition every tick_interval_seconds from its "
        "clock; external: something else does (tests and replays move time by publishing ticks, `tidings-tick`).",
    )
    tick_interval_seconds: float = Field(1.0, gt=0, description="How often timers are checked (internal ticks).")
    max_fires_per_tick: int = Field(
        10_000, ge=1, description="Timers one tick may fire on one partition; the rest fire on the next tick, in due order."
    )
    max_record_bytes: int = Field(
        1_000_000,
        ge=64 * 1024,
        description="The largest record Tidings writes (a rendered mail with its attachments' references, a "
        "firings record). Faust's producer refuses larger ones; a mail over it is dead-lettered "
        "message_too_large. Keep it at or below the producer's max.request.size and the topics' max.message.bytes.",
    )
    queued_status: bool = Field(
        False,
        description="Write a QUEUED delivery status for every mail rendered onto an outbound topic. Off, a mail's "
        "first status is its outcome (SENT, SUPPRESSED, FAILED): one record fewer per mail, 6 % of the worker's "
        "CPU per event at saturation. Turn it on for producing services that follow mails before they are sent.",
    )
    ledger_retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Delivery-ledger rows older than this are deleted (and tombstoned in its changelog). It must "
        "outlast every trigger's max_age: an event re-read after its id left the ledger would be sent again.",
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, description="Faust web server: /metrics and the health pages.")

    schemas_dir: Path = REPO_ROOT / "schemas"
    templates_dir: Path = REPO_ROOT / "templates"
    # Tenants are not read from a folder: the worker follows the tenants topic (``tidings-tenants publish``).
    tenants_catch_up_seconds: float = Field(
        30.0,
        gt=0,
        description="At start-up the worker reads the whole tenants topic before it consumes any event; it "
        "fails to start if that takes longer.",
    )

    suppressions_catch_up_seconds: float = Field(
        60.0,
        gt=0,
        description="At start-up the worker reads the whole suppressions topic before it sends any mail; it fails to "
        "start if that takes longer.",
    )
    unsubscribe_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="Deployment secret the one-click unsubscribe links are signed with (the same on every worker). "
        "Needed once a tenant sets unsubscribe.base_url; changing it invalidates every link already mailed.",
    )

    ses_endpoint_url: str | None = Field(None, description="SES endpoint; unset means the AWS default.")
    aws_region: str = "eu-west-1"
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    ses_timeout_seconds: float = Field(10.0, gt=0)
    ses_max_send_rate: float = Field(
        14.0,
        gt=0,
        description="The SES account's maximum send rate (recipients per second). Each worker takes the share of it "
        "that its outbound partitions are of all partitions, so the workers together stay at the quota.",
    )
    sender_concurrency: int | None = Field(
        None,
        ge=1,
        description="SES requests one worker has in flight at most; also what one crash can send twice. Unset: "
        "enough for a tenth of a second of the quota (ses_max_send_rate / 10, at least 16): a request holds its "
        "place for the send lead (25 ms) and SES's answer, so fewer places cap a worker below its quota.",
    )
    sender_max_uncommitted: int = Field(
        200,
        ge=2,
        description="Requests whose outcome is not yet committed, at most (a request holds its place until the "
        "commit after its answer): the bound on what a crash can send twice. It caps throughput near "
        "this / (commit interval + SES latency) per worker. A quarter is kept for the high lane.",
    )
    unknown_outcome: Literal["resend", "dead_letter"] = Field(
        "resend",
        description="A mail whose outcome is unknown (the worker crashed, or SES did not answer, after the request "
        "left): resend it (at most one duplicate, counted) or dead-letter it for an operator to check and re-drive.",
    )
    s3_endpoint_url: str | None = Field(None, description="Object store for attachments; unset means AWS S3.")
    max_attachment_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="Larger attachments fail the mail (SES takes 40 MB per message, base64 grows 4/3)."
    )

    termination_log: Path | None = Field(
        None,
        description="A file the worker writes, as it stops itself, why: 'held (exit 75): <where> failed with "
        "<error types>' when a dependency failed under a record or a commit, 'crashed (exit N): <error types>' "
        "otherwise. Kubernetes shows /dev/termination-log as the container's termination message (the Helm "
        "chart sets it). Error types and Tidings' own infrastructure messages only, never other messages, "
        "which may quote payload values. Unset: nothing written.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="The worker's log level, unless its command line names one (-l): streams/__main__.py."
    )

    # Issue 14: render budgets, per mail (streams/rendering/budget.py, README "Tenants"). The defaults are far
    # above any template of the four packs; a mail over one is dead-lettered render_failed, naming it.
    render_max_iterations: int = Field(
        20_000, ge=100, description="Loop iterations plus calls (macros, filters, methods) one mail's templates may make."
    )
    render_max_cpu_seconds: float = Field(
        0.1, gt=0, le=10, description="CPU time rendering one mail's three parts may take (compiling excluded)."
    )
    render_max_subject_chars: int = Field(1_000, ge=100, description="Characters a rendered subject may have.")
    render_max_html_chars: int = Field(
        256 * 1024, ge=4096, description="Characters the HTML part may have (also the largest value a template may build)."
    )
    render_max_text_chars: int = Field(128 * 1024, ge=1024, description="Characters the text part may have.")
    # Issue 17: the sender's SES client.
    ses_client: Literal["lean", "boto3"] = Field(
        "lean",
        description="How the sender calls SES: 'lean' signs and sends SES v2 SendEmail itself over pooled aiohttp "
        "(streams/delivery/sesv2.py, a fraction of boto3's CPU per mail); 'boto3' uses boto3's sesv2 client on threads.",
    )

    @model_validator(mode="after")
    def _batch_within_record_limit(self) -> Settings:
        if self.producer_batch_bytes > self.max_record_bytes:
            raise ValueError(
                f"TIDINGS_PRODUCER_BATCH_BYTES ({self.producer_batch_bytes}) is over TIDINGS_MAX_RECORD_BYTES "
                f"({self.max_record_bytes}): the broker would refuse a full batch"
            )
        return self

    @property
    def producer_linger_seconds(self) -> float:
        """``producer_linger_ms``, or its default for the processing guarantee.

        Under exactly-once the commit closes the lingering batches and sends them (aiokafka's
        ``flush_for_commit``) before it ends the transaction, and nothing is visible before that: a
        linger past the commit interval never delays a mail, and a transaction's records go out
        in one produce request per producer instead of one per linger. At 150 events/s that
        halved the produce requests (148 to 73 a second) for 0.91 of the CPU per event at the same
        p99; at saturation 0.659 against 0.704 ms per event (README, Performance).
        """
        if self.producer_linger_ms is not None:
            return self.producer_linger_ms / 1000
        if self.processing_guarantee == "exactly_once":
            return min(self.commit_interval_seconds + LINGER_PAST_COMMIT_SECONDS, MAX_DERIVED_LINGER_SECONDS)
        return AT_LEAST_ONCE_LINGER_SECONDS

    @property
    def sender_in_flight(self) -> int:
        """``sender_concurrency``, or when unset the places a tenth of a second of the quota needs.

        Each request holds its place from its grant through the send lead and SES's answer (tens
        of milliseconds from AWS): at 16 places and 60 ms a worker could not send more than about
        270 mails/s whatever its quota; against the stand-in (about 1 ms an answer) at 500/s, 16
        places reached about 400 mails/s and 48 about 440 (README, Performance > Sender).
        """
        if self.sender_concurrency is not None:
            return self.sender_concurrency
        return max(MIN_SENDER_IN_FLIGHT, math.ceil(self.ses_max_send_rate * IN_FLIGHT_SECONDS))

    @property
    def broker_url(self) -> str:
        return ";".join(f"kafka://{hostport}" for hostport in self.kafka_bootstrap.split(","))
