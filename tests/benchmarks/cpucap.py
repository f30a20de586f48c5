"""CPU caps per process for the benchmarks, from the kernel's cgroup ``cpu`` controller.

Why: on a small machine the broker, the publisher and the reader share the cores with the workers,
so "two workers against one" measures how many cores are left over as much as how Tidings scales.
The faster a worker gets, the larger the share of the machine the broker's work for it takes, and
the lower that ratio goes: two workers at 0.56 ms per event with 0.28 ms of broker and reader work
per event can make at most 2 x 0.56 / (0.56 + 0.28) = 1.33 of one worker on 2 cores. Capping each
worker at the same share of a core (what a Kubernetes CPU limit does to a pod) leaves both runs
headroom, so the ratio says what adding a worker adds: partitions moved, the group's coordination,
the commits of more transactional producers.

The caps are CFS bandwidth limits: ``cpu.cfs_quota_us`` in a cgroup v1 ``cpu`` hierarchy, or
``cpu.max`` in cgroup v2, each capped process in a group of its own under this process's group.
They need a writable hierarchy (root, or a delegated subtree); ``CpuCaps.open`` says why not when
there is none, and the benchmark then skips what needs them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PERIOD_US = 100_000


class CapsUnavailable(Exception):
    pass


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, type, options) of every cgroup mount."""
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, kind, options, *_ = line.split()
            if kind in ("cgroup", "cgroup2"):
                found.append((point, kind, set(options.split(","))))
    return found


def _own_path(v1_controller: str | None) -> str:
    """This process's group in the hierarchy (``/proc/self/cgroup``): the v1 one naming the
    controller, or the v2 one (hierarchy 0)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if v1_controller is None and hierarchy == "0":
                return path
            if v1_controller is not None and v1_controller in controllers.split(","):
                return path
    return "/"


def _controllers(point: Path) -> list[str]:
    try:
        return (point / "cgroup.controllers").read_text().split()
    except OSError:
        return []


class CpuCaps:
    """Groups of one process each, every one limited to ``cores`` CPUs."""

    def __init__(self, base: Path, v2: bool, cores: float, name: str) -> None:
        self.base, self.v2, self.cores, self.name = base, v2, cores, name
        self.groups: list[Path] = []

    @classmethod
    def open(cls, cores: float, name: str) -> CpuCaps:
        if not 0 < cores <= (os.cpu_count() or 1):
            raise ValueError(f"a cap of {cores} cores on a machine of {os.cpu_count()}")
        tried = []
        for point, kind, options in _mounts():
            if kind == "cgroup" and "cpu" in options:
                base, v2 = Path(point) / _own_path("cpu").lstrip("/"), False
                control = base / "cpu.cfs_quota_us"
            elif kind == "cgroup2" and "cpu" in _controllers(Path(point)):
                base, v2 = Path(point) / _own_path(None).lstrip("/"), True
                control = base / "cgroup.subtree_control"
                with contextlib.suppress(OSError):  # a child's cpu.max needs cpu enabled for children
                    control.write_text("+cpu")
            else:
                continue
            if os.access(base, os.W_OK) and control.exists():
                return cls(base, v2, cores, name)
            tried.append(f"{base} ({'cgroup2' if v2 else 'cgroup v1 cpu'}): not writable")
        raise CapsUnavailable("no writable cgroup cpu controller" + (f": {'; '.join(tried)}" if tried else ""))

    def cap(self, pid: int, label: str) -> None:
        """Move ``pid`` (all its threads) into a group of its own limited to ``cores``."""
        group = self.base / f"{self.name}-{label}"
        group.mkdir(exist_ok=True)
        quota = int(self.cores * PERIOD_US)
        if self.v2:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))
        self.groups.append(group)

    def close(self) -> None:
        """Remove the groups; a process still in one goes back to this process's group first."""
        for group in self.groups:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    (self.base / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                group.rmdir()
        self.groups.clear()
