"""``deploy/local/worker.py``'s supervision: what the tests' workers do when one exits by itself.

Child processes are stand-ins (``python -c 'exit(N)'``); starting a real worker is the
integration tests' business. ``start`` is replaced so that a restart is observed, not run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.worker import MAX_SUPERVISED_RESTARTS, WorkerProcess
from streams.runtime.guard import EXIT_HELD


def _exited(code: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    process.wait()
    return process


def _worker(tmp_path: Path, code: int, *, supervised: bool) -> tuple[WorkerProcess, list[int]]:
    worker = WorkerProcess(workdir=tmp_path, env={}, supervised=supervised)
    worker.process = _exited(code)
    restarts: list[int] = []

    def start() -> WorkerProcess:
        restarts.append(1)
        worker.process = _exited(code)
        return worker

    worker.start = start  # type: ignore[method-assign]
    return worker, restarts


def test_a_supervised_worker_held_on_a_failed_dependency_is_started_again(tmp_path: Path) -> None:
    worker, restarts = _worker(tmp_path, EXIT_HELD, supervised=True)
    assert worker.assert_alive() is False
    assert len(restarts) == 1 and len(worker.held_exits) == 1


def test_an_unsupervised_worker_that_exits_fails_the_wait(tmp_path: Path) -> None:
    worker, restarts = _worker(tmp_path, EXIT_HELD, supervised=False)
    with pytest.raises(RuntimeError, match=f"worker exited with code {EXIT_HELD}"):
        worker.assert_alive()
    assert restarts == []


def test_supervision_restarts_only_a_held_exit(tmp_path: Path) -> None:
    worker, restarts = _worker(tmp_path, 1, supervised=True)
    with pytest.raises(RuntimeError, match="worker exited with code 1"):
        worker.assert_alive()
    assert restarts == []


def test_a_worker_held_again_and_again_fails_after_the_limit(tmp_path: Path) -> None:
    worker, restarts = _worker(tmp_path, EXIT_HELD, supervised=True)
    for _ in range(MAX_SUPERVISED_RESTARTS):
        worker.assert_alive()
    with pytest.raises(RuntimeError, match=f"worker exited with code {EXIT_HELD}"):
        worker.assert_alive()
    assert len(restarts) == MAX_SUPERVISED_RESTARTS
