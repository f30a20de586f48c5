"""What integration tests do to a deployment: publish, start and stop workers, wait for mail.

Every wait has a deadline and checks the workers are still alive while it waits, so a crashed
worker fails the test at once with its log instead of after the timeout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.ses_emulator import SentMail, sent_mails
from deploy.local.worker import WorkerProcess
from streams.codecs.avro import SingleObjectCodec
from streams.codecs.schemas import SchemaRepository
from streams.producer import EventPublisher
from streams.settings import REPO_ROOT, Settings
from streams.tenants import cli as tenants_cli
from streams.topics import TopicNames, ensure_topics
from streams.triggers.tickcli import TickPublisher

EXAMPLE_TENANTS = REPO_ROOT / "deploy" / "tenants"

T = TypeVar("T")
TEST_UNSUBSCRIBE_SECRET = "integration-tests-only-unsubscribe-secret"
DEFAULT_DEADLINE_SECONDS = 90.0
FINAL_STATUSES = frozenset({"SENT", "FAILED", "SUPPRESSED"})


def worker_env(run: str, bootstrap: str, ses_endpoint: str, prefix: str = "it") -> dict[str, str]:
    """``TIDINGS_*`` of a worker on its own topics and consumer group, with time moved by ticks."""
    return {
        "TIDINGS_APP_ID": f"{prefix}-{run}",
        "TIDINGS_TOPIC_PREFIX": f"{prefix}-{run}.",
        "TIDINGS_KAFKA_BOOTSTRAP": bootstrap,
        "TIDINGS_SES_ENDPOINT_URL": ses_endpoint,
        "TIDINGS_S3_ENDPOINT_URL": ses_endpoint,
        "TIDINGS_AWS_ACCESS_KEY_ID": "test",
        "TIDINGS_AWS_SECRET_ACCESS_KEY": "test",
        "TIDINGS_PARTITIONS": "4",
        # Well above what a test sends: pacing is tested on its own (test_delivery_faults.py).
        "TIDINGS_SES_MAX_SEND_RATE": "1000",
        # Tests move time themselves (Deployment.tick), months in seconds.
        "TIDINGS_TICK_SOURCE": "external",
        # Example tenants with non-transactional triggers link to one-click unsubscribes, signed with it.
        "TIDINGS_UNSUBSCRIBE_SECRET": TEST_UNSUBSCRIBE_SECRET,
    }


@dataclass
class Deployment:
    run: str
    bootstrap: str
    ses_endpoint: str
    workdir: Path
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)
    _publisher: EventPublisher | None = None
    _ticks: TickPublisher | None = None

    @functools.cached_property
    def settings(self) -> Settings:
        return Settings(
            app_id=self.env["TIDINGS_APP_ID"],
            topic_prefix=self.env["TIDINGS_TOPIC_PREFIX"],
            kafka_bootstrap=self.bootstrap,
            partitions=int(self.env["TIDINGS_PARTITIONS"]),
        )

    @functools.cached_property
    def topics(self) -> TopicNames:
        return TopicNames.from_settings(self.settings)

    @property
    def publisher(self) -> EventPublisher:
        if self._publisher is None:
            self._publisher = EventPublisher(self.bootstrap, REPO_ROOT / "schemas")
        return self._publisher

    def tick(self, *instants: dt.datetime) -> None:
        """Move the workers' time: one tick per instant to every partition (``tidings-tick``)."""
        if self._ticks is None:
            self._ticks = TickPublisher(self.settings)
        for now in instants:
            self._ticks.tick(now)
        self._ticks.flush()

    def metric(self, worker: WorkerProcess, name: str, **labels: str) -> float:
        """The sum of a metric's samples on one worker's /metrics, over those matching ``labels``."""
        try:
            text = urllib.request.urlopen(worker.metrics_url, timeout=5).read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def wait_partitions_shared(self, workers: list[WorkerProcess], timeout: float = DEFAULT_DEADLINE_SECONDS) -> None:
        """Until every one of ``workers`` owns some partitions and none owns them all.

        Read from what each worker reports: it sends at its outbound partitions' share of the
        quota, so a send-rate limit under most of the whole quota means a share, not all of it.
        """
        quota = float(self.env["TIDINGS_SES_MAX_SEND_RATE"])

        def shared() -> bool:
            limits = [self.metric(w, "tidings_send_rate_limit") for w in workers]
            return all(0 < limit < 0.8 * quota for limit in limits)

        self.wait_for(f"{len(workers)} workers sharing the partitions", shared, timeout)

    def wait_metric(self, name: str, at_least: float, timeout: float = DEFAULT_DEADLINE_SECONDS, **labels: str) -> float:
        """Wait until ``name`` summed over every running worker reaches ``at_least``."""
        seen = [0.0]

        def probe() -> float | None:
            seen[0] = sum(self.metric(w, name, **labels) for w in self.workers if w.running)
            return seen[0] if seen[0] >= at_least else None

        return self.wait_for(lambda: f"{name}{labels or ''} >= {at_least} (at {seen[0]})", probe, timeout)

    def create_topics(self) -> None:
        ensure_topics(self.settings)

    def publish_tenants(self, *paths: Path) -> None:
        """Publish tenant files (default: the example tenants) as ``tidings-tenants publish`` does."""
        tenants_cli.publish(list(paths) or [EXAMPLE_TENANTS], self.settings)

    def email(self, n: int | str) -> str:
        """A recipient address unique to this test run."""
        return f"c{n}.{self.run}@example.org"

    def start_worker(self, name: str = "w1", **env: str) -> WorkerProcess:
        """Start a worker of this deployment; ``env`` adds or replaces its ``TIDINGS_*`` (``TIDINGS_ROLE=...``)."""
        worker = WorkerProcess(workdir=self.workdir / name, env={**self.env, **env})
        self.workers.append(worker)
        return worker.start()

    def my_mails(self) -> list[SentMail]:
        return [m for m in sent_mails(self.ses_endpoint) if any(self.run in d for d in m.destinations)]

    def wait_for(
        self, what: str | Callable[[], str], probe: Callable[[], T | None], timeout: float = DEFAULT_DEADLINE_SECONDS
    ) -> T:
        """Call ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            for worker in self.workers:
                worker.assert_alive()
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                logs = "\n\n".join(f"--- {w.log_file}\n{w.log_tail(40)}" for w in self.workers)
                description = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {description}\n{logs}")
            time.sleep(0.25)

    def wait_for_mails(self, count: int, timeout: float = DEFAULT_DEADLINE_SECONDS) -> list[SentMail]:
        seen: list[SentMail] = []

        def probe() -> list[SentMail] | None:
            seen[:] = self.my_mails()
            return seen if len(seen) >= count else None

        return self.wait_for(lambda: f"{count} mails in the SES emulator (got {len(seen)})", probe, timeout)

    def read_topic(self, topic: str, count: int, timeout: float = DEFAULT_DEADLINE_SECONDS) -> list[Any]:
        """Read ``count`` committed records from the start of every partition of ``topic``."""
        records: list[Any] = []
        with self.reader(topic) as consumer:
            def probe() -> list[Any] | None:
                records.extend(m for m in consumer.consume(num_messages=1000, timeout=0.5) if m.error() is None)
                return records if len(records) >= count else None

            return self.wait_for(lambda: f"{count} records on {topic} (got {len(records)})", probe, timeout)

    def wait_settled(self, at_least: int, timeout: float = DEFAULT_DEADLINE_SECONDS) -> dict[str, list[dict[str, Any]]]:
        """Until ``at_least`` mails have a final delivery status and every mail with a status has one.

        Returns each message id's status records in order. A SENT status commits with the ledger's
        "sent", so once every id has one, no further processing of their records can send them again.
        """
        history: dict[str, list[dict[str, Any]]] = {}
        codec = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))
        with self.reader(self.topics.delivery_status) as consumer:
            def settled(records: list[dict[str, Any]]) -> bool:
                return any(r["status"] in FINAL_STATUSES for r in records)

            def probe() -> dict[str, list[dict[str, Any]]] | None:
                for msg in consumer.consume(num_messages=1000, timeout=0.5):
                    if msg.error() is None:
                        record = codec.decode(msg.value()).record
                        history.setdefault(record["message_id"], []).append(record)
                unsettled = [i for i, records in history.items() if not settled(records)]
                return history if len(history) >= at_least and not unsettled else None

            def what() -> str:
                unsettled = sum(1 for records in history.values() if not settled(records))
                return f"{at_least} mails settled (queued {len(history)}, not settled {unsettled})"

            return self.wait_for(what, probe, timeout)

    @contextlib.contextmanager
    def reader(self, topic: str) -> Iterator[Any]:
        """A read_committed consumer on every partition of ``topic`` from the start, outside any group."""
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": f"reader-{self.run}-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        })
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            yield consumer
        finally:
            consumer.close()

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.flush()
            self._publisher = None
        if self._ticks is not None:
            self._ticks.flush()
            self._ticks = None
        for worker in self.workers:
            try:
                worker.stop()
            except RuntimeError:
                pass
        self._delete_topics()

    def _delete_topics(self) -> None:
        """Drop this run's topics (its prefix and Faust's, both start with the app id).

        The session shares one broker; without this, each test's ~40 topics stayed, and the last
        tests ran against a broker carrying thousands of partitions of the earlier ones.
        """
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        app_id = self.env["TIDINGS_APP_ID"]
        topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(app_id)]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=60).values():
                future.result()
