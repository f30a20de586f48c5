"""The SES stand-in (``main.go`` here) from Python: build it, start it, switch its faults, read what it took.

    with SesStub(workdir) as stub:            # builds .tidings/bin/sesstub-<hash> once, starts it on a free port
        stub.endpoint                         # point TIDINGS_SES_ENDPOINT_URL here
        stub.throttle(0.3, seed=3, seconds=60)
        stub.unavailable("reset", seconds=60)
        stub.reject("bounce")
        stub.heal()
        stub.stats()                          # StubStats: counters, accepted-send times and recipients

The stand-in is for throughput: it accepts any well-shaped, SigV4-signed SendEmail and keeps only
its arrival time and recipient. moto stays the SES of the functional tests, which read whole
messages back; tests/integration/test_sesstub_parity.py shows both accept the same requests.

The binary is built with the Go toolchain (``go`` on PATH or /usr/local/go/bin/go) into the
git-ignored ``.tidings/bin``, named by a hash of the Go sources, so an edit rebuilds it and an
unchanged tree reuses it. Set ``TIDINGS_SESSTUB_GOMAXPROCS`` to give it more than one core.

It runs at a higher scheduling priority than the worker when the system allows it (nice -10,
``TIDINGS_SESSTUB_NICE`` to change, 0 for none; refused without the privilege, and then it runs as
is). Its arrival stamps stand for SES's, on machines of its own; sharing two cores with the worker
and the broker, the stand-in was measured taken off the CPU for up to 40 ms, then stamping the
requests that queued meanwhile as if they had arrived together.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from deploy.local.support import terminate

SOURCE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SOURCE_DIR.parent.parent
BIN_DIR = REPO_ROOT / ".tidings" / "bin"
START_TIMEOUT_SECONDS = 30.0
BUILD_TIMEOUT_SECONDS = 300.0  # a first build compiles net/http; a contended 2-core machine takes a minute


def go_binary() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise RuntimeError("the SES stand-in needs the Go toolchain: put `go` on PATH (https://go.dev/dl/)")
    return found


def build() -> Path:
    """The stand-in's binary, built if the Go sources changed since the last build."""
    sources = sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in (".go", ".mod") and not p.name.endswith("_test.go"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()[:12]
    binary = BIN_DIR / f"sesstub-{digest}"
    if binary.exists():
        return binary
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".{os.getpid()}.tmp")  # two test processes may build at once
    result = subprocess.run(
        [go_binary(), "build", "-o", str(partial), "."], cwd=SOURCE_DIR, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_SECONDS, env={**os.environ, "CGO_ENABLED": "0"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"building the SES stand-in failed:\n{result.stderr[-4000:]}")
    partial.replace(binary)
    return binary


@dataclass(frozen=True)
class StubStats:
    """What the stand-in counted since it started (or was reset); times are wall-clock seconds."""

    counts: dict[str, int]  # requests, accepted, throttle, unavailable-503, unavailable-reset, reject, bad_auth, ...
    accepted_sends: tuple[float, ...]  # arrival times of accepted SendEmail calls, in order
    recipients: tuple[str, ...]  # the first recipient of each, in the same order
    cpu_seconds: float  # the stand-in's own CPU time
    # requests read (admin calls included) by whose clock stamped their arrival: "kernel" (the
    # receive time of the first byte) or "clock" (the stand-in's, where the kernel gave none)
    stamps: dict[str, int]

    @property
    def faulted(self) -> int:
        return sum(v for k, v in self.counts.items() if k in ("throttle", "reject") or k.startswith("unavailable"))

    def peak_sends(self, window: float = 1.0) -> int:
        """The most accepted sends in any half-open window of ``window`` seconds."""
        return peak(self.accepted_sends, window)


def peak(stamps: tuple[float, ...], window: float = 1.0) -> int:
    """The most of the sorted ``stamps`` in any half-open window of ``window`` seconds."""
    return max((bisect.bisect_left(stamps, s + window) - i for i, s in enumerate(stamps)), default=0)


class SesStub:
    """The stand-in as a child process on 127.0.0.1 (a free port)."""

    def __init__(
        self, workdir: Path, *, max_send_rate: float = 14.0, gomaxprocs: int | None = None,
        faults: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.initial_faults = faults or {}  # on from the first request: the fields of main.go's Faults
        self.max_send_rate = max_send_rate
        self.gomaxprocs = gomaxprocs or int(os.environ.get("TIDINGS_SESSTUB_GOMAXPROCS", "1"))
        self.nice = int(os.environ.get("TIDINGS_SESSTUB_NICE", "-10"))
        self.process: subprocess.Popen[bytes] | None = None
        self._endpoint: str | None = None

    @property
    def endpoint(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("the SES stand-in is not started")
        return self._endpoint

    def start(self) -> SesStub:
        binary = build()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "sesstub.log", "wb") as log:
            self.process = subprocess.Popen(
                [str(binary), "-addr", "127.0.0.1:0", "-max-send-rate", str(self.max_send_rate),
                 "-faults", json.dumps(self.initial_faults)],
                stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                env={**os.environ, "GOMAXPROCS": str(self.gomaxprocs)},
                preexec_fn=self._prioritise,  # before exec, so every thread of the Go runtime inherits it
            )
        assert self.process.stdout is not None
        # The first line names the port; readline blocks until it comes or the process ends.
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            terminate(self.process, 5)
            raise RuntimeError(f"the SES stand-in did not start: {line!r}; {(self.workdir / 'sesstub.log').read_text()[-2000:]}")
        self._endpoint = line.removeprefix("listening on ")
        return self

    def _prioritise(self) -> None:
        try:
            os.nice(self.nice)
        except PermissionError:
            pass  # unprivileged: the stand-in competes like any process, and its stamps may bunch

    def stop(self) -> None:
        terminate(self.process, 5)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> SesStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults (see main.go for what each answers)

    def faults(self, **settings: Any) -> None:
        """Set faults with the fields of main.go's ``Faults`` (``throttle=0.3, throttle_seconds=60``, ...)."""
        self._post("/_stub/faults", settings)

    def throttle(self, fraction: float, seed: int = 0, *, seconds: float | None = None) -> None:
        self.faults(throttle=fraction, seed=seed, throttle_seconds=seconds)

    def unavailable(self, mode: Literal["503", "reset"] = "503", *, seconds: float | None = None) -> None:
        self.faults(unavailable=mode, unavailable_seconds=seconds)

    def reject(self, recipient_substring: str, *, seconds: float | None = None) -> None:
        self.faults(reject=recipient_substring, reject_seconds=seconds)

    def heal(self) -> None:
        self.faults(heal=True)

    def reset(self) -> None:
        """Forget every recorded send and counter (faults stay as they are)."""
        self._post("/_stub/reset", {})

    # --- what it took

    def counts(self) -> dict[str, int]:
        """The counters alone (requests, accepted, each fault, bad_auth): one small page, cheap to poll."""
        return {k: int(v) for k, v in self._get("/_stub/stats")["counts"].items()}

    def stats(self) -> StubStats:
        summary = self._get("/_stub/stats")
        arrivals = self._get("/_stub/arrivals?from=0")
        order = sorted(range(len(arrivals["at"])), key=arrivals["at"].__getitem__)  # handlers append out of order
        return StubStats(
            counts={k: int(v) for k, v in summary["counts"].items()},
            accepted_sends=tuple(arrivals["at"][i] for i in order),
            recipients=tuple(arrivals["to"][i] for i in order),
            cpu_seconds=float(summary["cpu_seconds"]),
            stamps={k: int(v) for k, v in summary["stamps"].items()},
        )

    def captured(self) -> list[dict[str, Any]]:
        """The last SendEmail requests kept whole (``faults(capture=n)`` turns keeping on): headers and body."""
        result: list[dict[str, Any]] = self._get("/_stub/captured")
        return result

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=30) as response:
            return json.load(response)

    def _post(self, path: str, body: dict[str, Any]) -> None:
        data = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
        request = urllib.request.Request(f"{self.endpoint}{path}", data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
