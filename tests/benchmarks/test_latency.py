"""What the latency settings buy and cost: one worker paced at a steady rate, two configurations
taken in turn, on the real broker.

A mail waits, between its event and the moment the sender (or any ``read_committed`` reader) can
see it, for the fetch that brings the event (``TIDINGS_FETCH_MAX_WAIT_MS`` when the rate is low),
for the next commit (``TIDINGS_COMMIT_INTERVAL_SECONDS``) and for the commit itself (a few broker
round trips, or ``TIDINGS_PRODUCER_RETRY_BACKOFF_MS`` more when the broker asks to retry). Shorter
waits cost CPU: more fetch rounds over every assigned partition, more commits. This benchmark
measures both sides for the **defaults** against a **baseline** configuration (by default the
defaults before 2026-12-07: fetches held up to 50 ms, a commit every 100 ms, aiokafka's 100 ms
retry backoff, a 5 ms producer linger), in the same run, the configurations alternating over the
repeats:

- an **idle** window (``_IDLE_SECONDS``, default 10) after the warm-up event: the worker's CPU share
  with nothing to do;
- a **paced** phase, ``TIDINGS_BENCH_LATENCY_RATE`` events/s (default 150) for
  ``TIDINGS_BENCH_LATENCY_SECONDS`` (default 20) after 3 s at the same rate to settle: latency
  p50/p99 from the inbound record's timestamp to the outbound record visible to a
  ``read_committed`` consumer (*visible*), and to the outbound record's own timestamp, when the
  worker produced it (*produced*, before any commit), the worker's CPU per event, the requests its
  Kafka clients sent per event (``tidings_kafka_requests_total``) and the machine's busy cores
  (the worker, the broker, which those requests keep busy, and the load).

``TIDINGS_BENCH_LATENCY_BASELINE`` replaces the baseline's settings (``NAME=value,...``, e.g.
``TIDINGS_FETCH_MAX_WAIT_MS=20,TIDINGS_COMMIT_INTERVAL_SECONDS=0.05``); ``_REPEATS`` (default 3).
The worker's sender runs at the default quota meanwhile, as in the e2e benchmark. Medians of the
repeats, printed and written to ``.tidings/bench/latency.json``. Only sanity is asserted (every
event came out exactly once), never speed.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.sesstub import SesStub
from streams.producer import EventPublisher
from streams.settings import REPO_ROOT
from tests.benchmarks import report
from tests.benchmarks.procstat import cpu_seconds
from tests.benchmarks.reader import OutboundReader
from tests.benchmarks.test_e2e import INGEST_QUOTA, Workloads, tidings_deployment, worker_pipeline
from tests.benchmarks.workload import BenchParams

JSON_PATH = REPO_ROOT / ".tidings" / "bench" / "latency.json"
BEFORE = ("TIDINGS_FETCH_MAX_WAIT_MS=50,TIDINGS_COMMIT_INTERVAL_SECONDS=0.1,TIDINGS_PRODUCER_RETRY_BACKOFF_MS=100,"
          "TIDINGS_PRODUCER_LINGER_MS=5")


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise pytest.UsageError(f"{name} must be positive, not {value}")
    return value


def _settings(raw: str) -> dict[str, str]:
    """``NAME=value,...`` of worker settings; only ``TIDINGS_*`` names."""
    pairs = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("TIDINGS_") or not value:
            raise pytest.UsageError(f"TIDINGS_BENCH_LATENCY_BASELINE: {item!r} is not TIDINGS_NAME=value")
        pairs[name] = value
    return pairs


RATE = _number("TIDINGS_BENCH_LATENCY_RATE", 150)
SECONDS = _number("TIDINGS_BENCH_LATENCY_SECONDS", 20)
IDLE_SECONDS = _number("TIDINGS_BENCH_LATENCY_IDLE_SECONDS", 10)
REPEATS = int(_number("TIDINGS_BENCH_LATENCY_REPEATS", 3))
BASELINE = _settings(os.environ.get("TIDINGS_BENCH_LATENCY_BASELINE") or BEFORE)
SETTLE_SECONDS = 3.0
STARTUP_SECONDS = 120.0
TOTAL_SECONDS = REPEATS * 2 * (STARTUP_SECONDS + IDLE_SECONDS + 3 * (SETTLE_SECONDS + SECONDS) + 60) + 120


def kafka_requests(metrics_url: str) -> float:
    """Requests the worker's Kafka clients sent so far (``tidings_kafka_requests_total``, all of them)."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) if family.name == "tidings_kafka_requests"
               for s in family.samples if s.name == "tidings_kafka_requests_total")


def run_config(name: str, env: dict[str, str], kafka_bootstrap: str, stub: SesStub, publisher: EventPublisher,
               params: BenchParams, workdir: Path) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    workloads = Workloads(run, publisher)
    deployment = tidings_deployment(kafka_bootstrap, stub, run, params, workdir, name=f"latency-{name}")
    reader = OutboundReader(kafka_bootstrap, deployment.topics.outbound, f"bench-{run}-latency-{name}-reader")
    try:
        worker = deployment.start_worker(**env)
        pipeline = worker_pipeline(f"Tidings ({name})", deployment, worker, reader, publisher)
        pipeline.warm_up(publisher, workloads.take(1))
        (pid,) = pipeline.pids()
        before = cpu_seconds(pid)
        time.sleep(IDLE_SECONDS)
        idle = (cpu_seconds(pid) - before) / IDLE_SECONDS
        pipeline.phase("settle", publisher, workloads.take(int(RATE * SETTLE_SECONDS)), RATE)
        requests_before = kafka_requests(worker.metrics_url)
        events = workloads.take(int(RATE * SECONDS))
        paced = pipeline.phase("paced", publisher, events, RATE)
        requests = kafka_requests(worker.metrics_url) - requests_before
        worker.stop()
        f = paced.figures
        return {"visible_p50_ms": f.p50_ms, "visible_p99_ms": f.p99_ms, "produced_p50_ms": f.stamped_p50_ms,
                "produced_p99_ms": f.stamped_p99_ms, "cpu_ms_per_event": paced.cpu_ms_per_event,
                "requests_per_event": round(requests / len(events.events), 2),
                "machine_cores": paced.machine_cores_busy, "idle_cores": round(idle, 3)}
    finally:
        reader.close()
        deployment.close()


@pytest.mark.timeout(TOTAL_SECONDS)
def test_latency_settings_against_a_baseline(kafka_bootstrap: str, bench_params: BenchParams, tmp_path: Path) -> None:
    with SesStub(tmp_path / "sesstub", max_send_rate=INGEST_QUOTA) as stub:
        _measure(kafka_bootstrap, stub, bench_params, tmp_path)


def _measure(kafka_bootstrap: str, ses_stub: SesStub, bench_params: BenchParams, tmp_path: Path) -> None:
    publisher = EventPublisher(kafka_bootstrap, REPO_ROOT / "schemas")
    configs = {"defaults": {}, "baseline": BASELINE}
    print(f"\nlatency benchmark: {RATE:.0f} events/s for {SECONDS:.0f} s, idle {IDLE_SECONDS:.0f} s, "
          f"{bench_params.partitions} partitions, {REPEATS} repeats; baseline {BASELINE}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for repeat in range(REPEATS):
        # Alternate which goes first: the broker's state (its logs, its caches) favours neither.
        order = list(configs) if repeat % 2 == 0 else list(reversed(configs))
        for name in order:
            figures = run_config(name, configs[name], kafka_bootstrap, ses_stub, publisher, bench_params,
                                 tmp_path / f"r{repeat}-{name}")
            print(f"  repeat {repeat + 1} {name}: {figures}", flush=True)
            runs[name].append(figures)
    del publisher  # before the session's broker stops
    medians = {name: {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}
               for name, results in runs.items()}
    result = {"benchmark": "latency", "commit": report.commit(), "machine": report.machine(), "rate": RATE,
              "seconds": SECONDS, "partitions": bench_params.partitions, "baseline": BASELINE, "repeats": runs,
              "medians": medians}
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nlatency at {result['commit']}, {RATE:.0f} events/s, medians of {REPEATS} (baseline: {BASELINE})")
    print(f"{'':10} {'visible p50':>11} {'p99 ms':>7} {'produced p50':>12} {'p99 ms':>7} {'CPU ms/ev':>9} "
          f"{'requests/ev':>11} {'machine':>7} {'idle cores':>10}")
    for name, m in medians.items():
        print(f"{name:10} {m['visible_p50_ms']:>11} {m['visible_p99_ms']:>7} {m['produced_p50_ms']:>12} "
              f"{m['produced_p99_ms']:>7} {m['cpu_ms_per_event']:>9} {m['requests_per_event']:>11} "
              f"{m['machine_cores']:>7} {m['idle_cores']:>10}")
    d, b = medians["defaults"], medians["baseline"]
    print(f"defaults / baseline: p99 x{d['visible_p99_ms'] / b['visible_p99_ms']:.2f}, "
          f"CPU per event x{d['cpu_ms_per_event'] / b['cpu_ms_per_event']:.2f}, "
          f"requests per event x{d['requests_per_event'] / b['requests_per_event']:.2f}, "
          f"machine x{d['machine_cores'] / b['machine_cores']:.2f}, idle x{d['idle_cores'] / b['idle_cores']:.2f}",
          flush=True)
