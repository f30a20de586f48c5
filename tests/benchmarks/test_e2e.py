"""Tidings end to end against two confluent-kafka loops doing the same work, on the real broker.

Three pipelines get the same pre-encoded BookingCreated events (same bytes, same partition count,
fresh topics each), one after the other, never together:

- **bare loop** (``baseline.py``): consume, decode, render, produce; no transactions, no state;
- **transactional loop** (``baseline.py --transactional``): the same, exactly-once as a Kafka
  client does it by hand (up to 500 records per transaction with their offsets);
- **Tidings**: a worker (``python -m streams worker``, exactly-once, state tables, timers planned,
  its settings the defaults, QUEUED statuses off among them, and its sender running at Tidings'
  default SES quota of 14 mails/s, writing delivery statuses, so that ingest is measured with
  the same work per event as the loops).

Each pipeline process starts, gets one warm-up event (its start-up and group join are not timed),
then three phases, each with events of its own:

1. **saturation**: N events published at once. Throughput = N / (last outbound record visible to
   a ``read_committed`` consumer - first publish), and **CPU per event** = CPU time (user + system,
   from /proc) of the pipeline's process over that window / N.
2. **paced at 150 events/s** for ``TIDINGS_BENCH_PACED_SECONDS`` (default 10): latency p50/p99,
   inbound record timestamp to outbound record visible.
3. **paced at 80 % of the saturation rate this pipeline reached**: latency p50/p99 again.

**Scale-out**: a second Tidings deployment with ``TIDINGS_BENCH_E2E_WORKERS`` workers (default 2;
1 skips it) in one consumer group, the partitions shared between them, gets the saturation phase
only; its rate against the one worker's in the same repeat is the scale-out ratio, and its CPU
per event sums the workers' processes. On a machine whose cores the broker and the load share,
that ratio is bounded by what is left of the machine (``cpucap.py`` has the arithmetic), so two
more deployments follow, one worker and ``TIDINGS_BENCH_E2E_WORKERS`` workers, each worker capped
at ``TIDINGS_BENCH_E2E_WORKER_CPU`` cores (default 0.5; 0 skips them) the way a container's CPU
limit caps it: their ratio is what adding a worker adds. Skipped, with the reason printed, where
no cgroup cpu controller is writable.

**The broker**, when the benchmark started it, is measured over every phase too: its CPU per event,
and how much of that its JIT compiler took (``procstat.py``). A broker just started spends more
CPU compiling than serving for minutes, and on a small machine that comes out of what the second
worker of the scale-out could use; so before the first repeat a deployment of
``TIDINGS_BENCH_E2E_WORKERS`` workers runs ``TIDINGS_BENCH_E2E_WARMUP_ROUNDS`` saturation rounds
(default 3; 0 skips the warm-up) and one paced at 150 events/s, untimed, and the runs then meet a
broker closer to a long-running one.

Then, separately from ingest, **outbound -> SES**: the worker stops (gracefully) and starts again
with a quota of ``TIDINGS_BENCH_E2E_QUOTA`` mails/s (default 200, a rate one worker can send), and
drains the mails of its run still unsent into the SES stand-in (``deploy/sesstub``); reported are
the rate the stand-in accepted them at (first to last accepted send after the restart) against
the quota, and the peak in any second.

``TIDINGS_BENCH_REPEATS`` (default 3) runs everything that many times; the table shows medians
and the ratios of Tidings to each loop, computed within each repeat. Figures are printed and
written to ``.tidings/bench/e2e.json``. Only sanity is asserted (every event came out exactly
once, every mail reached SES), never speed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deploy.local.kafka_broker import LocalBroker
from deploy.local.samples import BOOKING_CREATED
from deploy.local.worker import WorkerProcess
from deploy.sesstub import SesStub, peak
from streams.codecs.avro import SingleObjectCodec
from streams.producer import EventPublisher
from streams.settings import REPO_ROOT, Settings
from streams.topics import TopicNames, ensure_topics
from tests.benchmarks import report
from tests.benchmarks.baseline import BaselineProcess
from tests.benchmarks.cpucap import CapsUnavailable, CpuCaps
from tests.benchmarks.procstat import broker_times, cpu_seconds, machine_busy_seconds
from tests.benchmarks.reader import Figures, OutboundReader, figures
from tests.benchmarks.workload import BenchParams, Workload, build_workload
from tests.integration.harness import TEST_UNSUBSCRIBE_SECRET, Deployment


def _env_number(name: str, default: float, *, zero_skips: bool = False) -> float:
    raw = os.environ.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r} is not a number") from None
    if value < 0 or (value == 0 and not zero_skips):
        raise pytest.UsageError(f"{name} must be positive{' (or 0 to skip)' if zero_skips else ''}, not {value}")
    return value


EVENTS = int(_env_number("TIDINGS_BENCH_EVENTS", 2000))
REPEATS = int(_env_number("TIDINGS_BENCH_REPEATS", 3))
PACED_RATE = 150.0
PACED_SECONDS = _env_number("TIDINGS_BENCH_PACED_SECONDS", 10)
QUOTA = _env_number("TIDINGS_BENCH_E2E_QUOTA", 200)
INGEST_QUOTA = 14.0  # Settings.ses_max_send_rate's default, while ingest is measured
SCALE_WORKERS = int(_env_number("TIDINGS_BENCH_E2E_WORKERS", 2))
# Cores per worker in the capped scale-out; 0 skips it (more than the machine has: CpuCaps.open says so).
WORKER_CPU = _env_number("TIDINGS_BENCH_E2E_WORKER_CPU", 0.5, zero_skips=True)
# Untimed saturation rounds (and one paced) before the first repeat, for the broker's JIT to compile on (procstat.py).
WARMUP_ROUNDS = int(_env_number("TIDINGS_BENCH_E2E_WARMUP_ROUNDS", 3, zero_skips=True))
STARTUP_SECONDS = 120.0  # a process starts, joins its group and processes the warm-up event
PHASE_SECONDS = 60.0 + EVENTS / 10  # one phase through a pipeline, at 10 events/s at worst
SES_SECONDS = 60.0 + 3 * EVENTS / 20  # every mail of a repeat in SES, at 20 mails/s at worst
TOTAL_SECONDS = (REPEATS * (3 * (STARTUP_SECONDS + 3 * PHASE_SECONDS) + SES_SECONDS + 3 * (2 * STARTUP_SECONDS + PHASE_SECONDS))
                 + 2 * STARTUP_SECONDS + (WARMUP_ROUNDS + 1) * PHASE_SECONDS + 300)
@dataclass
class Phase:
    name: str
    rate: float | None  # events/s, None: all at once
    figures: Figures
    cpu_ms_per_event: float
    machine_cores_busy: float = 0.0  # the whole machine over the phase: pipeline, broker, publisher, reader
    # The local broker's CPU over the phase per event, and its JIT compiler's part of it (procstat.py);
    # None for a broker the benchmark did not start.
    broker_cpu_ms_per_event: float | None = None
    broker_jit_ms_per_event: float | None = None


@dataclass
class PipelineRun:
    """One pipeline process over its phases."""

    name: str
    topic: str
    reader: OutboundReader
    pids: Callable[[], list[int]]  # the pipeline's processes (several workers when scaled out)
    check: Callable[[], Any]
    codec: SingleObjectCodec
    phases: list[Phase] = field(default_factory=list)
    seen: int = 0  # outbound records before the current phase
    broker_pid: int | None = None  # the local broker's process, measured over each phase too

    def warm_up(self, publisher: EventPublisher, workload: Workload) -> None:
        publisher.publish_raw(self.topic, workload.warmup.value, key=workload.warmup.key)
        publisher.flush()
        self.reader.wait_for(workload.warmup_records, timeout=STARTUP_SECONDS, check=self.check,
                             what=f"{self.name}: warm-up event")
        self.seen = len(self.reader.arrivals)
        assert self.seen == workload.warmup_records, f"{self.name}: {self.seen} records for the warm-up event"

    def phase(self, name: str, publisher: EventPublisher, workload: Workload, rate: float | None) -> Phase:
        pids = self.pids()
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        broker_before = broker_times(self.broker_pid) if self.broker_pid is not None else None
        busy_before, wall_before = machine_busy_seconds(), time.monotonic()
        started_at = time.time()
        publish(publisher, self.topic, workload, rate)
        self.reader.wait_for(self.seen + workload.records, timeout=PHASE_SECONDS + len(workload.events) / (rate or 1e9),
                             check=self.check, what=f"{self.name}: {name}")
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        busy = (machine_busy_seconds() - busy_before) / (time.monotonic() - wall_before)
        broker = broker_times(self.broker_pid) - broker_before if self.broker_pid is not None and broker_before is not None else None
        result, records = figures(self.reader.arrivals[self.seen:], self.codec, started_at=started_at,
                                  events=len(workload.events))
        assert_exactly_once(records, workload, f"{self.name}: {name}")
        self.seen = len(self.reader.arrivals)
        per_event = 1000 / len(workload.events)
        phase = Phase(name, rate, result, round(cpu * per_event, 3), round(busy, 2),
                      round(broker.total * per_event, 3) if broker else None, round(broker.jit * per_event, 3) if broker else None)
        print(f"  {self.name} {name}: {result.events_per_second} events/s, p50 {result.p50_ms} ms, "
              f"p99 {result.p99_ms} ms, CPU {phase.cpu_ms_per_event} ms/event, machine {phase.machine_cores_busy} "
              f"of {os.cpu_count()} cores busy"
              + (f", broker {phase.broker_cpu_ms_per_event} ms/event (JIT {phase.broker_jit_ms_per_event})" if broker else ""),
              flush=True)
        self.phases.append(phase)
        return phase


def publish(publisher: EventPublisher, topic: str, workload: Workload, rate: float | None) -> None:
    """All at once, or each event at its due time (``rate`` per second) and handed over at once."""
    if rate is None:
        for event in workload.events:
            publisher.publish_raw(topic, event.value, key=event.key)
        publisher.flush()
        return
    start = time.monotonic()
    for i, event in enumerate(workload.events):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        publisher.publish_raw(topic, event.value, key=event.key)
        publisher.flush()


def assert_exactly_once(records: list[dict[str, Any]], workload: Workload, what: str) -> None:
    assert len(records) == workload.records, f"{what}: {len(records)} outbound records, expected {workload.records}"
    assert len({r["message_id"] for r in records}) == len(records), f"{what}: duplicate message ids"
    assert {r["source_event_id"] for r in records} == workload.event_ids, f"{what}: events missing from the output"


def prefixed(run: str, name: str, bootstrap: str, params: BenchParams) -> Settings:
    """Settings naming a fresh set of topics (``<prefix>bookings``, ``<prefix>outbound`` ...)."""
    return Settings(app_id=f"bench-{run}-{name}", topic_prefix=f"bench-{run}-{name}.",
                    kafka_bootstrap=bootstrap, partitions=params.partitions)


class Workloads:
    """Distinct events for each phase of each pipeline (entities and event ids never repeat)."""

    def __init__(self, run: str, publisher: EventPublisher) -> None:
        self.run = run
        self.publisher = publisher
        self.next = 0

    def take(self, count: int) -> Workload:
        workload = build_workload(count, self.run, self.publisher, first=self.next)
        self.next += count + 1
        return workload


def phases(pipeline: PipelineRun, publisher: EventPublisher, workloads: Workloads) -> None:
    pipeline.warm_up(publisher, workloads.take(1))
    saturated = pipeline.phase("saturation", publisher, workloads.take(EVENTS), None)
    pipeline.phase("paced 150/s", publisher, workloads.take(int(PACED_RATE * PACED_SECONDS)), PACED_RATE)
    rate = round(0.8 * saturated.figures.events_per_second, 1)
    pipeline.phase("paced 80%", publisher, workloads.take(max(1, int(rate * PACED_SECONDS))), rate)


def run_loop(bootstrap: str, publisher: EventPublisher, workloads: Workloads, run: str, params: BenchParams,
             workdir: Path, transactional: bool, broker_pid: int | None = None) -> PipelineRun:
    name = "transactional" if transactional else "bare"
    settings = prefixed(run, name, bootstrap, params)
    ensure_topics(settings)
    topics = TopicNames.from_settings(settings)
    process = BaselineProcess(bootstrap, topics.for_event(BOOKING_CREATED), topics.outbound, settings.app_id,
                              workdir / f"{name}.log", transactional=transactional)
    reader = OutboundReader(bootstrap, topics.outbound, f"bench-{run}-{name}-reader")
    try:
        process.start()
        assert process.process is not None
        pid = process.process.pid
        pipeline = PipelineRun(f"{name} loop", topics.for_event(BOOKING_CREATED), reader, lambda: [pid],
                               process.assert_alive, publisher.codec, broker_pid=broker_pid)
        phases(pipeline, publisher, workloads)
        process.stop()
        return pipeline
    finally:
        reader.close()
        process.stop()


def tidings_deployment(bootstrap: str, stub: SesStub, run: str, params: BenchParams, workdir: Path,
                       name: str = "tidings") -> Deployment:
    settings = prefixed(run, name, bootstrap, params)
    deployment = Deployment(
        run=run, bootstrap=bootstrap, ses_endpoint=stub.endpoint, workdir=workdir,
        env={
            "TIDINGS_APP_ID": settings.app_id,
            "TIDINGS_TOPIC_PREFIX": settings.topic_prefix,
            "TIDINGS_KAFKA_BOOTSTRAP": bootstrap,
            "TIDINGS_SES_ENDPOINT_URL": stub.endpoint,
            "TIDINGS_AWS_ACCESS_KEY_ID": "test",
            "TIDINGS_AWS_SECRET_ACCESS_KEY": "test",
            "TIDINGS_PARTITIONS": str(params.partitions),
            "TIDINGS_SES_MAX_SEND_RATE": str(INGEST_QUOTA),
            "TIDINGS_UNSUBSCRIBE_SECRET": TEST_UNSUBSCRIBE_SECRET,
        },
    )
    deployment.create_topics()
    deployment.publish_tenants()
    return deployment


def worker_pipeline(name: str, deployment: Deployment, worker: WorkerProcess, reader: OutboundReader,
                    publisher: EventPublisher, broker_pid: int | None = None) -> PipelineRun:
    """One worker of ``deployment`` as a pipeline: BookingCreated in, ``reader``'s topic out. Its
    process is looked up at each use, so a restarted worker is measured as itself."""

    def pid() -> list[int]:
        assert worker.process is not None
        return [worker.process.pid]

    return PipelineRun(name, deployment.topics.for_event(BOOKING_CREATED), reader, pid, worker.assert_alive,
                       publisher.codec, broker_pid=broker_pid)


def run_tidings(bootstrap: str, stub: SesStub, publisher: EventPublisher, workloads: Workloads, run: str,
                params: BenchParams, workdir: Path, broker_pid: int | None = None) -> tuple[PipelineRun, dict[str, Any]]:
    deployment = tidings_deployment(bootstrap, stub, run, params, workdir)
    topics = deployment.topics
    reader = OutboundReader(bootstrap, topics.outbound, f"bench-{run}-tidings-reader")
    stub.reset()
    try:
        worker = deployment.start_worker()
        pipeline = worker_pipeline("Tidings", deployment, worker, reader, publisher, broker_pid)
        phases(pipeline, publisher, workloads)
        expected = len(reader.arrivals)
        worker.stop()
        before = stub.stats()
        worker.env = {**worker.env, "TIDINGS_SES_MAX_SEND_RATE": str(QUOTA)}
        worker.start()
        ses = ses_drain(worker.assert_alive, stub, expected=expected, already=len(before.accepted_sends))
        return pipeline, ses
    finally:
        reader.close()
        deployment.close()


def run_tidings_scaled(bootstrap: str, stub: SesStub, publisher: EventPublisher, workloads: Workloads, run: str,
                       params: BenchParams, workdir: Path, workers: int, caps: CpuCaps | None = None,
                       broker_pid: int | None = None, warm_up: int = 0) -> PipelineRun:
    """``workers`` workers in one group, timed once all of them own partitions: the saturation phase.
    With ``caps``, each worker is held to ``caps.cores`` from its start. ``warm_up`` > 0 makes it the
    broker's warm-up instead: that many saturation rounds, then one paced at 150 events/s."""
    name = f"tidings{workers}w" + ("capped" if caps else "")
    deployment = tidings_deployment(bootstrap, stub, run, params, workdir, name=name)
    topics = deployment.topics
    reader = OutboundReader(bootstrap, topics.outbound, f"bench-{run}-{name}-reader")
    try:
        running = [deployment.start_worker(f"w{n + 1}") for n in range(workers)]
        if caps is not None:
            for n, w in enumerate(running):
                assert w.process is not None
                caps.cap(w.process.pid, f"{run}-{name}-w{n + 1}")
        if workers > 1:
            deployment.wait_partitions_shared(running, timeout=STARTUP_SECONDS)

        def check() -> None:
            for w in running:
                w.assert_alive()

        def pids() -> list[int]:
            return [w.process.pid for w in running if w.process is not None]

        title = f"Tidings, {workers} worker{'s' if workers > 1 else ''}" + (f" capped at {caps.cores} cores" if caps else "")
        pipeline = PipelineRun(title, topics.for_event(BOOKING_CREATED), reader, pids, check, publisher.codec,
                               broker_pid=broker_pid)
        pipeline.warm_up(publisher, workloads.take(1))
        if not warm_up:
            pipeline.phase("saturation", publisher, workloads.take(EVENTS), None)
            return pipeline
        for n in range(warm_up):
            pipeline.phase(f"warm-up saturation {n + 1}/{warm_up}", publisher, workloads.take(EVENTS), None)
        # The broker serves a paced run by other paths (fetches held until data arrives): compiled here too.
        pipeline.phase("warm-up paced 150/s", publisher, workloads.take(int(PACED_RATE * PACED_SECONDS)), PACED_RATE)
        return pipeline
    finally:
        reader.close()
        deployment.close()
        if caps is not None:
            caps.close()


def ses_drain(check: Callable[[], Any], stub: SesStub, *, expected: int, already: int) -> dict[str, Any]:
    """Wait (with a deadline) until the stand-in accepted every mail; the rate of those sent after the restart."""
    deadline = time.monotonic() + SES_SECONDS
    accepted = stub.counts().get("accepted", 0)
    while accepted < expected and time.monotonic() < deadline:
        check()
        time.sleep(0.5)
        accepted = stub.counts().get("accepted", 0)
    stats = stub.stats()
    stamps = stats.accepted_sends[already:]
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    rate = (len(stamps) - 1) / span if span > 0 else 0.0
    return {
        "expected": expected,
        "accepted_by_stub": len(stats.accepted_sends),
        "distinct_recipients": len(set(stats.recipients)),
        "drained_after_restart": len(stamps),
        "quota": QUOTA,
        "achieved_per_second": round(rate, 1),
        "achieved_to_quota": round(rate / QUOTA, 3),
        "peak_in_any_second": peak(stamps),
    }


@pytest.fixture(scope="module")
def ses_stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SesStub]:
    stub = SesStub(tmp_path_factory.mktemp("sesstub"), max_send_rate=max(QUOTA, INGEST_QUOTA)).start()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.mark.timeout(TOTAL_SECONDS)
def test_tidings_against_kafka_loops(kafka_broker: LocalBroker | None, kafka_bootstrap: str, ses_stub: SesStub,
                                     bench_params: BenchParams, tmp_path: Path) -> None:
    publisher = EventPublisher(kafka_bootstrap, REPO_ROOT / "schemas")
    broker_pid = kafka_broker.process.pid if kafka_broker is not None and kafka_broker.process is not None else None
    print(f"\ne2e benchmark: {EVENTS} events at saturation, {PACED_SECONDS:.0f} s paced at {PACED_RATE:.0f}/s and at 80 % "
          f"of saturation, {bench_params.partitions} partitions, SES quota {QUOTA:.0f}/s, {REPEATS} repeats", flush=True)
    if WARMUP_ROUNDS:
        # Untimed: the broker compiles the paths the runs take (procstat.py), here rather than in the first repeat.
        print(f"broker warm-up: {WARMUP_ROUNDS} saturation rounds and one paced of {SCALE_WORKERS} worker(s), not counted",
              flush=True)
        warm = uuid.uuid4().hex[:8]
        run_tidings_scaled(kafka_bootstrap, ses_stub, publisher, Workloads(warm, publisher), warm, bench_params,
                           tmp_path / "warm-up", SCALE_WORKERS, broker_pid=broker_pid, warm_up=WARMUP_ROUNDS)
    caps = None
    if SCALE_WORKERS > 1 and WORKER_CPU > 0:
        try:
            caps = CpuCaps.open(WORKER_CPU, "tidings-bench")
            print(f"capped scale-out: 1 and {SCALE_WORKERS} workers at {WORKER_CPU} cores each", flush=True)
        except CapsUnavailable as e:
            print(f"capped scale-out skipped: {e}", flush=True)
    repeats = []
    for repeat in range(REPEATS):
        run = uuid.uuid4().hex[:8]
        workloads = Workloads(run, publisher)
        workdir = tmp_path / f"r{repeat}"
        print(f"repeat {repeat + 1}/{REPEATS} (run {run})", flush=True)
        bare = run_loop(kafka_bootstrap, publisher, workloads, run, bench_params, workdir, transactional=False,
                        broker_pid=broker_pid)
        txn = run_loop(kafka_bootstrap, publisher, workloads, run, bench_params, workdir, transactional=True,
                       broker_pid=broker_pid)
        tidings, ses = run_tidings(kafka_bootstrap, ses_stub, publisher, workloads, run, bench_params, workdir / "tidings",
                                   broker_pid=broker_pid)
        scaled = (run_tidings_scaled(kafka_bootstrap, ses_stub, publisher, workloads, run, bench_params,
                                     workdir / "scaled", SCALE_WORKERS, broker_pid=broker_pid).phases
                  if SCALE_WORKERS > 1 else None)
        capped = None
        if SCALE_WORKERS > 1 and caps is not None:
            capped = [run_tidings_scaled(kafka_bootstrap, ses_stub, publisher, workloads, run, bench_params,
                                         workdir / f"capped{n}", n, caps, broker_pid=broker_pid).phases
                      for n in (1, SCALE_WORKERS)]
        repeats.append(report.repeat_figures(bare=bare.phases, transactional=txn.phases, tidings=tidings.phases, ses=ses,
                                             scaled=scaled, workers=SCALE_WORKERS, capped=capped,
                                             cores_per_worker=WORKER_CPU))
        assert ses["accepted_by_stub"] == ses["expected"], (
            f"{ses['accepted_by_stub']}/{ses['expected']} mails at the SES stand-in within {SES_SECONDS:.0f}s")
        assert ses["distinct_recipients"] == ses["expected"], "a mail reached the SES stand-in twice"
    del publisher  # before the session's broker stops
    figures_ = report.build(events=EVENTS, partitions=bench_params.partitions, broker=bench_params.broker,
                            repeats=repeats, quota=QUOTA, paced_seconds=PACED_SECONDS)
    report.write(figures_)
    print(report.table(figures_), flush=True)
