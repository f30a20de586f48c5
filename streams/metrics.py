"""Every Prometheus metric Tidings exports, declared once.

Naming follows ``tidings_<noun>_total`` for counters and a unit suffix for histograms. Labels are
small fixed sets (topic, event type, tenant, trigger, stage, reason, outcome); never a recipient,
an entity id or a message id, which would grow without bound and leak personal data.

``create()`` builds the metrics on a registry of the caller's choosing, so tests can make as many
independent sets as they like; the worker exposes its registry at ``/metrics``.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

# From a few milliseconds (event and mail both local) to minutes (a backlog draining after SES
# was throttled): the spread an SRE needs to tell "slow" from "stuck".
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class Metrics(NamedTuple):
    registry: CollectorRegistry
    events_consumed: Counter
    emails_rendered: Counter
    emails_sent: Counter
    duplicates_skipped: Counter
    failures: Counter
    dead_letters: Counter
    dead_letter_topic_records: Counter
    send_retries: Counter
    unknown_outcomes: Counter
    sender_blocked: Gauge
    sends_in_flight: Gauge
    sender_uncommitted_limit: Gauge
    send_rate_limit: Gauge
    send_queue_seconds: Histogram
    delivery_status_records: Counter
    record_outcomes: Counter
    mails_skipped: Counter
    ledger_expired: Counter
    event_to_sent_seconds: Histogram
    render_seconds: Histogram
    tenants_loaded: Gauge
    tenant_updates: Counter
    entity_updates: Counter
    timers_pending: Gauge
    timer_partitions_ready: Gauge
    timers_fired: Counter
    timers_skipped: Counter
    timer_fire_lag_seconds: Histogram
    ticks: Counter
    tick_seconds: Histogram
    timer_index_rebuild_seconds: Histogram
    feedback_events: Counter
    suppression_records: Counter
    suppression_entries: Gauge
    mails_suppressed: Counter
    # issue 14: why a tenants-topic record was not applied (the suppressions feed labels its own).
    tenant_records_rejected: Counter
    # Issue 15: producers in any language (partitioning, legacy fingerprints) and customers who leave.
    mispartitioned_events: Counter
    legacy_fingerprint_events: Counter
    inactive_customers: Gauge
    # Issue 18: what an SRE needs to see without another exporter (streams/observe.py, streams/delivery/quota.py).
    worker_ready: Gauge
    consumer_lag: Gauge
    restore_rows_remaining: Gauge
    restore_rows_restored: Gauge
    timer_oldest_due_seconds: Gauge
    event_loop_lag_seconds: Gauge
    commit_seconds: Histogram
    kafka_requests: Counter
    ses_max_send_rate: Gauge
    ses_max_24h_send: Gauge
    ses_sent_last_24h: Gauge
    ses_sending_enabled: Gauge
    ses_enforcement_status: Gauge
    ses_account_polls: Counter
    build_info: Gauge
    ses_feedback: Counter


def create(registry: CollectorRegistry | None = None) -> Metrics:
    registry = registry if registry is not None else CollectorRegistry()
    return Metrics(
        registry=registry,
        events_consumed=Counter(
            "tidings_events_consumed_total", "Domain events read from the inbound topics.",
            ["topic", "event_type"], registry=registry,
        ),
        emails_rendered=Counter(
            "tidings_emails_rendered_total", "Mails rendered and written to the outbound topic.",
            ["tenant", "trigger", "locale_fallback"], registry=registry,
        ),
        emails_sent=Counter(
            "tidings_emails_sent_total", "Mails accepted by the email provider.",
            ["tenant", "trigger"], registry=registry,
        ),
        duplicates_skipped=Counter(
            "tidings_duplicates_skipped_total", "Outbound records whose message id the ledger had already sent.",
            ["tenant", "trigger"], registry=registry,
        ),
        failures=Counter(
            "tidings_failures_total", "Records or mails that failed, by pipeline stage and reason code.",
            ["stage", "reason"], registry=registry,
        ),
        dead_letters=Counter(
            "tidings_dead_letters_total", "Records written to the dead-letter topic.",
            ["stage", "reason"], registry=registry,
        ),
        dead_letter_topic_records=Counter(
            "tidings_dead_letter_topic_records_total",
            "Dead letters this worker wrote, by reason (the sum over stages of tidings_dead_letters_total).",
            ["reason"], registry=registry,
        ),
        send_retries=Counter(
            "tidings_send_retries_total", "Provider calls retried after a transient failure.",
            ["reason"], registry=registry,
        ),
        unknown_outcomes=Counter(
            "tidings_delivery_unknown_outcomes_total",
            "Mails whose earlier attempt may have reached the provider without its answer being recorded: "
            "crash (found 'sending' in the ledger) or no_answer (timeout, dropped connection). See policy.py.",
            ["cause", "policy"], registry=registry,
        ),
        sender_blocked=Gauge(
            "tidings_sender_blocked",
            "1 while the provider refuses all sending (account paused or suspended, identity not verified): alert on it.",
            ["reason"], registry=registry,
        ),
        sends_in_flight=Gauge("tidings_sends_in_flight", "Provider requests under way in this worker.", registry=registry),
        sender_uncommitted_limit=Gauge(
            "tidings_sender_uncommitted_limit",
            "Requests whose outcome may be uncommitted at once (TIDINGS_SENDER_MAX_UNCOMMITTED): what a crash can resend.",
            registry=registry,
        ),
        send_rate_limit=Gauge(
            "tidings_send_rate_limit",
            "Recipients per second this worker may send: its share of the account quota by owned outbound partitions.",
            registry=registry,
        ),
        send_queue_seconds=Histogram(
            "tidings_send_queue_seconds", "From rendering a mail to the start of its first provider request, by lane.",
            ["lane"], buckets=LATENCY_BUCKETS, registry=registry,
        ),
        delivery_status_records=Counter(
            "tidings_delivery_status_records_total",
            "Delivery-status records this worker wrote (in the transaction of the work they report), by status.",
            ["status"], registry=registry,
        ),
        record_outcomes=Counter(
            "tidings_record_outcomes_total",
            "Input records by how they ended (streams/runtime/guard.py): committed with their outputs, "
            "dead_lettered, or held (not acknowledged: the worker stops and reads them again).",
            ["stage", "outcome"], registry=registry,
        ),
        mails_skipped=Counter(
            "tidings_mails_skipped_total",
            "Mails of an event not sent on purpose, by reason: stale (the event is older than its trigger's max_age).",
            ["tenant", "trigger", "reason"], registry=registry,
        ),
        ledger_expired=Counter(
            "tidings_ledger_expired_total",
            "Delivery-ledger rows deleted (with a changelog tombstone) for being older than TIDINGS_LEDGER_RETENTION_DAYS.",
            registry=registry,
        ),
        event_to_sent_seconds=Histogram(
            "tidings_event_to_sent_seconds", "From the domain event's Kafka timestamp to the provider's acceptance.",
            ["trigger"], buckets=LATENCY_BUCKETS, registry=registry,
        ),
        render_seconds=Histogram(
            "tidings_render_seconds", "Time to render one mail (all parts).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=registry,
        ),
        tenants_loaded=Gauge(
            "tidings_tenants_loaded", "Tenants this worker knows, as read from the tenants topic.", registry=registry,
        ),
        tenant_updates=Counter(
            "tidings_tenant_updates_total",
            "Records of the tenants topic this worker read: applied, rejected (kept the previous version) or removed.",
            ["outcome"], registry=registry,
        ),
        entity_updates=Counter(
            "tidings_entity_updates_total", "Entity states changed (or forgotten) by an event, by table.",
            ["table", "outcome"], registry=registry,
        ),
        timers_pending=Gauge(
            "tidings_timers_pending", "Entities with a pending timer on this worker's partitions whose timer index is "
            "built (tidings_timer_partitions_ready).", registry=registry,
        ),
        timer_partitions_ready=Gauge(
            "tidings_timer_partitions_ready",
            "Partitions whose timer index is built, so that their ticks fire timers; after a restart or rebalance "
            "each is built before its first tick.", registry=registry,
        ),
        timers_fired=Counter(
            "tidings_timers_fired_total", "Timers that came due and fired (their mails were rendered).",
            ["tenant", "trigger"], registry=registry,
        ),
        timers_skipped=Counter(
            "tidings_timers_skipped_total",
            "Due timers that did not fire: late (past the trigger's grace) or invalid (the state or tenant no "
            "longer plans them at fire time).",
            ["tenant", "trigger", "reason"], registry=registry,
        ),
        timer_fire_lag_seconds=Histogram(
            "tidings_timer_fire_lag_seconds", "How long after its due time a timer fired (tick time minus due time).",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0), registry=registry,
        ),
        ticks=Counter(
            "tidings_ticks_total", "Tick records processed (one per partition and tick interval).", registry=registry,
        ),
        tick_seconds=Histogram(
            "tidings_tick_seconds",
            "Time one tick spends deciding its partition's due timers (index, revalidation, table updates).",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0), registry=registry,
        ),
        timer_index_rebuild_seconds=Histogram(
            "tidings_timer_index_rebuild_seconds",
            "Rebuilding one partition's timer index from its table, wall time: it runs in slices with the other "
            "agents' work in between, which is counted; the partition's ticks wait for it.",
            buckets=(0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0), registry=registry,
        ),
        feedback_events=Counter(
            "tidings_feedback_events_total",
            "SES events and unsubscribes read: suppressed (led to suppression records), ignored (a transient "
            "bounce, a delivery ...) or dead_lettered.",
            ["event_type", "outcome"], registry=registry,
        ),
        suppression_records=Counter(
            "tidings_suppression_records_total",
            "Records of the suppressions topic this worker read: applied (by reason), removed (lifted) or rejected.",
            ["outcome", "reason"], registry=registry,
        ),
        suppression_entries=Gauge(
            "tidings_suppression_entries", "Suppressed tenant/address pairs this worker knows, all tenants.",
            registry=registry,
        ),
        mails_suppressed=Counter(
            "tidings_mails_suppressed_total", "Mails not sent because their recipient is suppressed, by the reason.",
            ["tenant", "reason"], registry=registry,
        ),
        tenant_records_rejected=Counter(
            "tidings_tenant_records_rejected_total",
            "Records of the tenants topic this worker did not apply (the tenant's previous version stays), by reason.",
            ["reason"], registry=registry,
        ),
        mispartitioned_events=Counter(
            "tidings_mispartitioned_events_total",
            "Inbound records whose key Kafka's default partitioner puts on another partition than the one they "
            "arrived on: their producer does not use the default partitioner. Processed all the same.",
            ["topic"], registry=registry,
        ),
        legacy_fingerprint_events=Counter(
            "tidings_legacy_fingerprint_events_total",
            "Inbound records written under a schema fingerprint Tidings computed before it followed the Avro "
            "specification (the producer kit before issue 15). Accepted; see README 'Schemas' for how long.",
            ["topic", "event_type"], registry=registry,
        ),
        inactive_customers=Gauge(
            "tidings_inactive_customers",
            "Customers this worker knows as inactive (deactivated, not reactivated), all tenants; their mails "
            "are counted in tidings_mails_suppressed_total{reason=\"customer_inactive\"}.",
            registry=registry,
        ),
        worker_ready=Gauge(
            "tidings_worker_ready",
            "1 while /readyz answers 200 (topics, feeds, partitions and tables ready), else 0.", registry=registry,
        ),
        consumer_lag=Gauge(
            "tidings_consumer_lag_records",
            "Records not yet committed by this worker's consumer group, per assigned input partition: the high "
            "watermark it last fetched (the last stable offset under exactly-once) minus the committed offset. "
            "A partition written in transactions reads 1 when caught up (its commit marker).",
            ["topic", "partition"], registry=registry,
        ),
        restore_rows_remaining=Gauge(
            "tidings_restore_rows_remaining",
            "Changelog records a table still has to restore on this worker before it is ready; 0 once restored.",
            ["table"], registry=registry,
        ),
        restore_rows_restored=Gauge(
            "tidings_restore_rows_restored",
            "Changelog records a table restored on this worker in the restore under way (or the last one).",
            ["table"], registry=registry,
        ),
        timer_oldest_due_seconds=Gauge(
            "tidings_timer_oldest_due_seconds",
            "Age of the oldest timer that is due but not fired yet, on this worker's partitions; 0 when none is due.",
            registry=registry,
        ),
        event_loop_lag_seconds=Gauge(
            "tidings_event_loop_lag_seconds",
            "How late the worker's event loop ran a callback that was due, at the last sample (once a second).",
            registry=registry,
        ),
        commit_seconds=Histogram(
            "tidings_commit_seconds",
            "How long a commit of the worker's offsets took: under exactly-once the producer buffer's drain and "
            "every partition's transaction (offsets, end). A mail becomes visible to the sender at a commit, so "
            "this adds to event-to-sent latency once per mail.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0), registry=registry,
        ),
        kafka_requests=Counter(
            "tidings_kafka_requests",
            "Requests the worker's Kafka clients sent to the brokers, by client (producer, consumer) and API "
            "(Produce, Fetch, AddPartitionsToTxn, EndTxn...): what the worker costs the brokers, which the "
            "commit interval and the fetch waits trade for latency.",
            ["client", "api"], registry=registry,
        ),
        ses_max_send_rate=Gauge(
            "tidings_ses_max_send_rate", "The SES account's MaxSendRate (recipients per second), from GetAccount.",
            registry=registry,
        ),
        ses_max_24h_send=Gauge(
            "tidings_ses_max_24h_send", "The SES account's Max24HourSend (recipients per 24 h; -1 unlimited), from GetAccount.",
            registry=registry,
        ),
        ses_sent_last_24h=Gauge(
            "tidings_ses_sent_last_24h", "Recipients the SES account sent to in the last 24 h (all senders), from GetAccount.",
            registry=registry,
        ),
        ses_sending_enabled=Gauge(
            "tidings_ses_sending_enabled", "1 while the SES account's SendingEnabled is true, from GetAccount.",
            registry=registry,
        ),
        ses_enforcement_status=Gauge(
            "tidings_ses_enforcement_status",
            "1 for the SES account's current EnforcementStatus (HEALTHY, PROBATION, SHUTDOWN, other), 0 for the rest.",
            ["status"], registry=registry,
        ),
        ses_account_polls=Counter(
            "tidings_ses_account_polls_total", "GetAccount polls (once a minute), by outcome: ok or error.",
            ["outcome"], registry=registry,
        ),
        build_info=Gauge(
            "tidings_build_info",
            "Always 1; the labels say which Tidings and which libraries this worker runs, and its role (TIDINGS_ROLE).",
            ["version", "faust_version", "aiokafka_version", "python_version", "role"], registry=registry,
        ),
        ses_feedback=Counter(
            "tidings_ses_feedback_total",
            "SES bounces and complaints that suppressed a recipient, per tenant (a permanent bounce, a complaint): "
            "what SES's own bounce and complaint rates count, against tidings_emails_sent_total.",
            ["tenant", "event_type"], registry=registry,
        ),
    )


def with_process_metrics(m: Metrics, role: str = "all") -> Metrics:
    """The worker's own CPU, memory and file descriptors (``process_*``), and ``tidings_build_info``
    (with the worker's role, so dashboards tell the stateless lane's workers apart)."""
    import importlib.metadata
    import platform

    ProcessCollector(registry=m.registry)

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    m.build_info.labels(version("tidings"), version("faust-streaming"), version("aiokafka"),
                        platform.python_version(), role).set(1)
    return m


class Series:
    """A labelled metric's series by label values, each looked up once.

    ``labels()`` validates, converts and locks on every call (about a microsecond), and the ingest
    handler counts four series per event. The dict holds what the metric itself holds (one entry
    per series), so only for metrics whose series are never removed.
    """

    __slots__ = ("metric", "_series")

    def __init__(self, metric: Counter) -> None:
        self.metric = metric
        self._series: dict[tuple[str, ...], Counter] = {}

    def __call__(self, *values: str) -> Counter:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = self.metric.labels(*values)
        return series


def observe_many(histogram: Histogram, value: float, count: int) -> None:
    """``count`` observations of one value, as ``count`` calls of ``observe`` would record them.

    prometheus_client has no bulk observe, and its ``observe`` takes a lock per call; a tick that
    fires ten thousand timers of one due time observes one lag ten thousand times. This writes
    what ``Histogram.observe`` writes (the sum, and the first bucket whose bound is not below the
    value; buckets are cumulated when collected) through the same value objects.
    """
    if count <= 0:
        return
    histogram._raise_if_not_observable()
    histogram._sum.inc(value * count)
    histogram._buckets[bisect.bisect_left(histogram._upper_bounds, value)].inc(count)
