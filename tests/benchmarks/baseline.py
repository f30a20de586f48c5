"""The baselines: the same work as a Tidings worker's ingest stage, as bare confluent-kafka loops.

    python -m tests.benchmarks.baseline --bootstrap H:P --inbound T --outbound T --group G [--transactional]

Per record: ``SingleObjectCodec.decode`` (fastavro, schemaless), the same trigger evaluation, the
same ``Renderer`` over the same Jinja2 templates, ``SingleObjectCodec.encode`` of the same
``tidings.outbound.RenderedEmail``, produced to the same partition number of the output topic.
No Faust, no state, no SES. Two loops:

- plain: a plain consumer (auto-commit) and a plain producer (librdkafka defaults: acks=all,
  linger 5 ms), no transactions;
- ``--transactional``: exactly-once as a Kafka client does it by hand: up to ``BATCH`` records
  consumed, processed and produced in one transaction with their offsets
  (``send_offsets_to_transaction``), committed, and the next batch. This is what the Tidings
  worker's exactly-once costs are compared with.

Each runs in its own process, as a worker does, until SIGTERM. ``BaselineProcess`` starts and stops
it from the benchmark and reads its CPU time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.settings import REPO_ROOT

BATCH = 500  # records per transaction of the transactional loop, at most


def run(bootstrap: str, inbound: str, outbound: str, group: str, transactional: bool = False) -> None:
    from confluent_kafka import Consumer, Producer

    from streams.codecs.avro import SingleObjectCodec
    from streams.codecs.schemas import SchemaRepository
    from streams.domain.evaluate import event_firings
    from streams.domain.rules import Catalog
    from streams.domain.tenants import TenantDirectory
    from streams.ingest.pipeline import OUTBOUND_SCHEMA
    from streams.rendering.render import Renderer, Source

    codec = SingleObjectCodec(SchemaRepository.load(REPO_ROOT / "schemas"))
    catalog = Catalog.load()
    tenants = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants")
    renderer = Renderer(REPO_ROOT / "templates")

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer_conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "topic.metadata.refresh.interval.ms": 1000}
    producer_conf = {"bootstrap.servers": bootstrap}
    if transactional:
        consumer_conf |= {"enable.auto.commit": False, "isolation.level": "read_committed"}
        producer_conf |= {"transactional.id": f"{group}-loop", "linger.ms": 5}
    consumer = Consumer(consumer_conf)
    producer = Producer(producer_conf)
    if transactional:
        producer.init_transactions(30)
    # A consumer subscribed to a topic its first metadata answer lacks (just created, not yet in
    # this broker's cache) waits for the next refresh, five minutes by default: the warm-up event
    # then timed out. Subscribe once the topic is known.
    deadline = time.monotonic() + 60
    while not _known(consumer, inbound) and time.monotonic() < deadline:
        time.sleep(0.2)
    consumer.subscribe([inbound])

    def process(msg: Any) -> None:
        decoded = codec.decode(msg.value())
        record = decoded.record
        tenant = tenants.get(record["envelope"]["tenant_id"])
        assert tenant is not None
        timestamp = dt.datetime.fromtimestamp(msg.timestamp()[1] / 1000, dt.timezone.utc)
        source = Source(topic=msg.topic(), event_id=record["envelope"]["event_id"], timestamp=timestamp)
        now = dt.datetime.now(dt.timezone.utc)
        for firing in event_firings(decoded.type_name, record, catalog, tenant):
            mail = renderer.render(firing, tenant, record, source, now).record
            value = codec.encode(OUTBOUND_SCHEMA, mail)
            while True:
                try:
                    producer.produce(outbound, key=mail["message_id"].encode(), value=value, partition=msg.partition())
                    break
                except BufferError:
                    producer.poll(0.1)

    while not stopping:
        if not transactional:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error() is not None:
                raise RuntimeError(f"consumer error: {msg.error()}")
            process(msg)
            producer.poll(0)
            continue
        batch = consumer.consume(num_messages=BATCH, timeout=0.05)
        if not batch:
            continue
        producer.begin_transaction()
        for msg in batch:
            if msg.error() is not None:
                raise RuntimeError(f"consumer error: {msg.error()}")
            process(msg)
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()), consumer.consumer_group_metadata())
        producer.commit_transaction()
    producer.flush(10)
    consumer.close()


def _known(consumer: Any, topic: str) -> bool:
    metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
    return metadata is not None and metadata.error is None and bool(metadata.partitions)


@dataclass
class BaselineProcess:
    bootstrap: str
    inbound: str
    outbound: str
    group: str
    log_file: Path
    transactional: bool = False
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> BaselineProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        args = ["--bootstrap", self.bootstrap, "--inbound", self.inbound, "--outbound", self.outbound, "--group", self.group]
        if self.transactional:
            args.append("--transactional")
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.benchmarks.baseline", *args],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def assert_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"baseline exited with code {self.process.returncode}:\n{self.log_file.read_text()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"baseline did not stop within {timeout}s; killed it") from None


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.baseline", description=__doc__.split("\n")[0])
    for name in ("bootstrap", "inbound", "outbound", "group"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--transactional", action="store_true", help="exactly-once: consume, produce and commit offsets in transactions")
    args = parser.parse_args()
    run(args.bootstrap, args.inbound, args.outbound, args.group, args.transactional)


if __name__ == "__main__":
    _main()
