"""Run a Tidings worker (``python -m streams worker``) as a child process.

The demo, the integration tests and the benchmarks all start real workers this way, each with its
own app id, topic prefix, data directory and web port, so several can share one broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.support import free_port, http_ok, wait_until
from streams.runtime.guard import EXIT_HELD

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
GRACEFUL_STOP_SECONDS = 60.0
MAX_SUPERVISED_RESTARTS = 5  # a worker held this often in one test is failing, not riding out a fault


@dataclass
class WorkerProcess:
    """One worker process; ``env`` holds its ``TIDINGS_*`` settings.

    ``supervised`` does what Kubernetes or systemd does in production: a worker that exits with
    ``EXIT_HELD`` (a dependency failed under a record it did not acknowledge) is started again, on
    the same state directory, and each such exit is kept in ``held_exits`` with the log that
    explains it. Any other exit still fails the test.
    """

    workdir: Path
    env: dict[str, str]
    log_level: str = "info"
    process: subprocess.Popen[bytes] | None = None
    web_port: int = field(default_factory=free_port)
    starts: int = 0
    expected_exit: bool = False
    supervised: bool = False
    held_exits: list[str] = field(default_factory=list)

    @property
    def log_file(self) -> Path:
        return self.workdir / f"worker-{self.starts}.log"

    @property
    def termination_log(self) -> Path:
        """Where the worker writes why it stopped itself, as Kubernetes' /dev/termination-log."""
        return self.workdir / "termination-log"

    def termination_message(self) -> str | None:
        return self.termination_log.read_text() if self.termination_log.is_file() else None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/metrics"

    def start(self) -> WorkerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.expected_exit = False
        self.termination_log.unlink(missing_ok=True)  # a new container gets a new one in Kubernetes too
        env = {
            **os.environ,
            "TIDINGS_DATA_DIR": str(self.workdir / "state"),
            "TIDINGS_WEB_PORT": str(self.web_port),
            "TIDINGS_TERMINATION_LOG": str(self.termination_log),
            **self.env,
        }
        # The child keeps its own copy of the descriptor; the parent's closes with the block.
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", "-l", self.log_level],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Until the worker's web server answers (it starts before the agents consume)."""
        wait_until(lambda: self.assert_alive() or http_ok(self.metrics_url), timeout=timeout, what="worker web server")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until ``/readyz`` answers 200: partitions assigned, tables restored, feeds read (``streams/health.py``)."""
        url = f"http://127.0.0.1:{self.web_port}/readyz"
        wait_until(lambda: self.assert_alive() or http_ok(url), timeout=timeout, what="worker ready")

    def assert_alive(self) -> bool:
        """Raise with the log tail if the worker died unasked; returns False so it fits in a wait condition."""
        if not self.expected_exit and self.process is not None and self.process.poll() is not None:
            if (self.supervised and self.process.returncode == EXIT_HELD
                    and len(self.held_exits) < MAX_SUPERVISED_RESTARTS):
                self.held_exits.append(self.first_error())
                self.start()
                return False
            raise RuntimeError(f"worker exited with code {self.process.returncode}:\n{self.first_error()}\n"
                               f"... last lines:\n{self.log_tail()}")
        return False

    def first_error(self, lines: int = 40) -> str:
        """The log from its first traceback or CRITICAL line on: the cause, which a crash's
        shutdown noise pushes out of the tail."""
        if not self.log_file.is_file():
            return ""
        text = self.log_file.read_text(errors="replace").splitlines()
        for n, line in enumerate(text):
            if line.startswith("Traceback") or "[CRITICAL]" in line:
                return "\n".join(text[max(0, n - 5):n + lines])
        return "(no traceback in the log)"

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_file.is_file():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = GRACEFUL_STOP_SECONDS) -> int | None:
        """SIGTERM and wait: Faust commits what it processed before it exits."""
        self.expected_exit = True
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"worker did not stop within {timeout}s; killed it:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to commit."""
        self.expected_exit = True
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
