"""The baseline: the same work as a Tidings worker's ingest stage, as a bare confluent-kafka loop.

    python -m tests.benchmarks.baseline --bootstrap H:P --inbound T --outbound T --group G

Per record: ``SingleObjectCodec.decode`` (fastavro, schemaless), the same trigger evaluation, the
same ``Renderer`` over the same Jinja2 templates, ``SingleObjectCodec.encode`` of the same
``tidings.outbound.RenderedEmail``, produced to the same partition number of the output topic.
No Faust, no transactions, no state, no SES: a plain consumer (auto-commit) and a plain producer
(librdkafka defaults: acks=all, linger 5 ms). It runs in its own process, as a worker does, until
SIGTERM. ``BaselineProcess`` starts and stops it from the benchmark.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from streams.settings import REPO_ROOT


def run(bootstrap: str, inbound: str, outbound: str, group: str) -> None:
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
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    producer = Producer({"bootstrap.servers": bootstrap})
    consumer.subscribe([inbound])
    while not stopping:
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error() is not None:
            raise RuntimeError(f"consumer error: {msg.error()}")
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
        producer.poll(0)
    producer.flush(10)
    consumer.close()


@dataclass
class BaselineProcess:
    bootstrap: str
    inbound: str
    outbound: str
    group: str
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> BaselineProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        args = ["--bootstrap", self.bootstrap, "--inbound", self.inbound, "--outbound", self.outbound, "--group", self.group]
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
    args = parser.parse_args()
    run(args.bootstrap, args.inbound, args.outbound, args.group)


if __name__ == "__main__":
    _main()
