"""A single-node Apache Kafka 4.x broker (KRaft, broker + controller in one JVM) on 127.0.0.1.

No Docker: the broker's jars come from Maven Central through ``deploy/kafka/pom.xml`` and
``mvn dependency:copy-dependencies``, once, into ``deploy/kafka/.jars`` (git-ignored); every later
start is offline. Each start formats a fresh KRaft log directory, binds free ports, and waits
until the broker answers a metadata request. The transaction-log settings are the ones a single
node needs for exactly-once processing (replication factor 1, min ISR 1).

    python -m deploy.local.kafka_broker fetch              download the jars (idempotent)
    python -m deploy.local.kafka_broker run                run in the foreground until Ctrl-C
    python -m deploy.local.kafka_broker start --dir D      start in the background, print bootstrap
    python -m deploy.local.kafka_broker stop --dir D       stop what ``start`` started

Set ``TIDINGS_TEST_BOOTSTRAP=host:port`` to use an existing broker instead (fixtures, demo and
benchmarks honour it and start nothing). ``TIDINGS_LOCAL_BROKER_LOG_LEVEL`` (default ``WARN``; ``INFO``
shows the controller's fencing and ISR changes) sets what the broker's ``server.log`` keeps.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.support import free_port, port_open, terminate, wait_until

KAFKA_DIR = Path(__file__).resolve().parent.parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
JARS = KAFKA_DIR / ".jars"
STAMP = JARS / ".pom-sha256"
EXISTING_BROKER_ENV = "TIDINGS_TEST_BOOTSTRAP"
MIN_JAVA = 17
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
# Topics are created on purpose (the worker's start-up, the fixtures); a typo must not create one.
auto.create.topics.enable=false
# One node: every internal topic has one replica, and exactly-once needs the transaction log to
# accept that (the defaults of 3 would leave transactions unavailable forever).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start and stop consumer groups all the time; no reason to wait for more members.
group.initial.rebalance.delay.ms=0
# Kafka's default week: time retention deletes by record timestamp, and tests date events days back
# (the replay's month simulation starts five days ago); a day deleted one mid-test when the
# retention check ran (CI: a replay test saw a topic's start move under it).
log.retention.hours=168
"""

LOG4J2_PROPERTIES = """\
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName={log_file}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level={level}
logger.apache.name=org.apache.kafka
logger.apache.level={level}
"""
LOG_LEVEL_ENV = "TIDINGS_LOCAL_BROKER_LOG_LEVEL"
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR")


class BrokerError(RuntimeError):
    """The local broker could not be assembled or started; the message says what to do."""


def log_level() -> str:
    """The broker's log level for Kafka's own loggers, from ``TIDINGS_LOCAL_BROKER_LOG_LEVEL``."""
    level = os.environ.get(LOG_LEVEL_ENV, "WARN").strip().upper() or "WARN"
    if level not in LOG_LEVELS:
        raise BrokerError(f"{LOG_LEVEL_ENV}={level!r}: use one of {', '.join(LOG_LEVELS)}")
    return level


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"{tool} not found on PATH: {hint}")
    return path


def check_java() -> str:
    java = _require("java", f"install a Java {MIN_JAVA}+ runtime (Debian: apt-get install openjdk-17-jre-headless)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    if match is None or int(match.group(1)) < MIN_JAVA:
        raise BrokerError(f"Kafka 4 needs Java {MIN_JAVA}+, found: {out.splitlines()[0] if out else 'unknown'}")
    return java


def fetch_jars() -> Path:
    """Download the broker's jars once; a changed pom.xml downloads again."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == digest:
        return JARS
    mvn = _require("mvn", "install Apache Maven (Debian: apt-get install maven) to fetch the Kafka jars")
    check_java()
    if JARS.exists():
        shutil.rmtree(JARS)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={JARS}", "-DincludeScope=runtime"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerError(f"fetching the Kafka jars failed ({' '.join(cmd)}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    STAMP.write_text(digest)
    return JARS


@dataclass
class LocalBroker:
    """One broker process and its files."""

    workdir: Path
    port: int = 0
    controller_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _owns_workdir: bool = field(default=False, repr=False)
    _base: list[str] = field(default_factory=list, repr=False)  # java and its options, set by start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> LocalBroker:
        java = check_java()
        jars = fetch_jars()
        classpath = f"{jars}/*"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        log_dir = self.workdir / "kraft-logs"
        if log_dir.exists():
            shutil.rmtree(log_dir)
        props = self.workdir / "server.properties"
        props.write_text(SERVER_PROPERTIES.format(port=self.port, controller_port=self.controller_port, log_dir=log_dir))
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES.format(log_file=self.log_file, level=log_level()))
        base = [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        fmt = subprocess.run(
            [*base, "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}", "-c", str(props)],
            capture_output=True, text=True,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{fmt.stdout}{fmt.stderr}")
        self._base = base
        return self._launch(timeout)

    def restart(self, timeout: float = START_TIMEOUT_SECONDS) -> LocalBroker:
        """Stop the broker (SIGTERM, a controlled shutdown) and start it again on the same port and data."""
        self.stop()
        return self._launch(timeout)

    def _launch(self, timeout: float) -> LocalBroker:
        props = self.workdir / "server.properties"
        # The child keeps its own copy of the descriptor; the parent's closes with the block.
        with open(self.workdir / "stdout.log", "ab") as stdout:
            self.process = subprocess.Popen(
                [*self._base, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true", "kafka.Kafka", str(props)],
                stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_until(self._ready, timeout=timeout, interval=0.5, what=f"Kafka broker on {self.bootstrap}")
        except (TimeoutError, BrokerError) as e:
            self.stop()
            raise BrokerError(f"{e}; last lines of {self.log_file}:\n{self.log_tail()}") from None
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise BrokerError(f"the broker exited with code {self.process.returncode}")
        return broker_answers(self.bootstrap)

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_file, self.workdir / "stdout.log"):
            if path.is_file():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        terminate(self.process, timeout)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cluster_id() -> str:
    # A KRaft cluster id is 16 random bytes in URL-safe base64 without padding. One in 64 starts
    # with "-", which the storage tool's argument parser takes for an option unless it is given
    # as --cluster-id=<id>.
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def broker_answers(bootstrap: str) -> bool:
    """True once the broker serves metadata (a listening port alone is not enough)."""
    from confluent_kafka.admin import AdminClient

    if not port_open(bootstrap):
        return False
    # log_level 0 keeps librdkafka's "connection refused" chatter off the terminal during start-up.
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
    try:
        admin.list_topics(timeout=2)
        return True
    except Exception:  # KafkaException while the broker is still coming up
        return False


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.kafka_broker", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker's jars")
    sub.add_parser("run", help="run a broker in the foreground")
    start = sub.add_parser("start", help="start a broker in the background")
    start.add_argument("--dir", type=Path, required=True)
    stop = sub.add_parser("stop", help="stop a broker started with start")
    stop.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    try:
        if args.command == "fetch":
            print(f"Kafka jars ready in {fetch_jars()}")
        elif args.command == "run":
            with LocalBroker(Path(tempfile.mkdtemp(prefix="tidings-kafka-"))) as broker:
                print(f"Kafka broker on {broker.bootstrap} (Ctrl-C stops it)", flush=True)
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        elif args.command == "start":
            broker = LocalBroker(args.dir.resolve()).start()
            assert broker.process is not None
            (args.dir / "pid").write_text(str(broker.process.pid))
            (args.dir / "bootstrap").write_text(broker.bootstrap)
            print(broker.bootstrap)
        elif args.command == "stop":
            pid_file = args.dir / "pid"
            if pid_file.is_file():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
                except ProcessLookupError:
                    pass
                pid_file.unlink()
    except BrokerError as e:
        sys.exit(f"kafka_broker: {e}")


if __name__ == "__main__":
    _main()
