"""CPU time from ``/proc``, for the benchmarks: a process's, the machine's, and the local broker's by thread.

``cpu_seconds`` is what a pipeline or worker process spent (user + system, all its threads);
``machine_busy_seconds`` what every core spent busy, whoever ran; ``broker_times`` the broker's,
with the part its JIT compiler took.

Why the broker's compiler: on a small machine the broker shares the cores with the pipelines, so
its CPU per event bounds what a second worker can add (``cpucap.py`` has the arithmetic), and a
broker just started also compiles: HotSpot's C1 and C2 compiler threads turn the request paths a
run exercises into machine code while the run goes on. Measured on the 2-core benchmark machine
(Tidings at saturation, one and two workers in turn): in the first three minutes of load the
compiler took 0.3-0.4 ms per event, more than the request handlers' 0.15-0.25 ms, and still
0.04-0.15 ms after five. Production brokers run for weeks with their paths long compiled, so the
e2e benchmark warms its broker first (``TIDINGS_BENCH_E2E_WARMUP_ROUNDS``) and reports both
figures per phase.

Linux only; for a broker the benchmark did not start (``TIDINGS_TEST_BOOTSTRAP``) there is no
process to read, and the broker's figures are left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# HotSpot names its compiler threads "C1 CompilerThread0", "C2 CompilerThread1"...; the kernel keeps 15 characters.
COMPILER_THREAD_PREFIXES = ("C1 CompilerThre", "C2 CompilerThre")


def stat_cpu_seconds(stat: str) -> float:
    """User + system time in a ``/proc/.../stat`` line (fields 14 and 15 of stat(5); the name,
    which may hold spaces and parentheses, ends at the last ``)``)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far, all its threads."""
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


def machine_busy_seconds() -> float:
    """CPU time every core of the machine spent busy so far (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS  # user..steal; not guest (already in user)


@dataclass(frozen=True)
class BrokerTimes:
    """CPU seconds (user + system) of every thread of the broker so far, and of its compiler threads."""

    total: float
    jit: float

    def __sub__(self, other: BrokerTimes) -> BrokerTimes:
        return BrokerTimes(self.total - other.total, self.jit - other.jit)


def broker_times(pid: int) -> BrokerTimes:
    """Summed over the threads alive now; a thread that ended since an earlier reading takes its time
    with it, so a difference can only under-count (the broker's threads live as long as it does)."""
    total = jit = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
        seconds = stat_cpu_seconds(stat)
        total += seconds
        if stat[stat.index("(") + 1:].startswith(COMPILER_THREAD_PREFIXES):
            jit += seconds
    return BrokerTimes(total, jit)
