"""docker-compose.yml is valid Compose, checked without a Docker engine.

``tests/compose`` is a small Go program on compose-go, the library ``docker compose`` itself loads
files with: it validates a file against the Compose specification's JSON schema and checks its
references (services, volumes). It is built once per session; the first build on a machine
downloads its modules (pinned in ``tests/compose/go.sum``) through the Go module proxy, later
builds come from Go's caches. Go is required: without it these tests fail, they never skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKER_DIR = REPO_ROOT / "tests" / "compose"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SERVICES = {"kafka", "ses", "worker", "prometheus", "grafana"}
BUILD_TIMEOUT_SECONDS = 240


@pytest.fixture(scope="session")
def compose_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            "`go` is not on PATH: the compose-file check is a Go program (tests/compose, compose-go). "
            "Install Go 1.24 or newer: https://go.dev/dl/",
            pytrace=False,
        )
    binary = tmp_path_factory.mktemp("compose-check") / "compose-check"
    # -mod=readonly: go.sum is complete, so a build must never rewrite it (whatever GOFLAGS says).
    # -buildvcs=false: no git metadata is needed, and stamping fails in some checkouts.
    cmd = [go, "build", "-mod=readonly", "-buildvcs=false", "-o", str(binary), "."]
    try:
        result = subprocess.run(cmd, cwd=CHECKER_DIR, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"building tests/compose took over {BUILD_TIMEOUT_SECONDS}s (is the Go module proxy reachable?)", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"building tests/compose failed ({' '.join(cmd)}):\n{result.stderr}", pytrace=False)
    return binary


def check(binary: Path, compose_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), str(compose_file)], capture_output=True, text=True, timeout=60)


def test_compose_file_is_valid(compose_check: Path) -> None:
    result = check(compose_check, COMPOSE_FILE)
    assert result.returncode == 0, result.stderr
    assert SERVICES <= set(result.stdout.split()), result.stdout


INVALID = {
    "ports-not-a-list": ("services:\n  worker:\n    image: tidings\n    ports: not-a-list-or-valid\n", "ports"),
    "unknown-top-level-key": ("services:\n  worker:\n    image: tidings\nworkers: 2\n", "workers"),
    "undefined-dependency": ("services:\n  worker:\n    image: tidings\n    depends_on: [kafka]\n", "kafka"),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_compose_file_is_rejected(compose_check: Path, tmp_path: Path, case: str) -> None:
    text, named_in_error = INVALID[case]
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(text)
    result = check(compose_check, bad)
    assert result.returncode != 0, f"accepted:\n{text}"
    # The right complaint, not a missing file or a crash.
    assert "invalid compose file" in result.stderr and named_in_error in result.stderr, result.stderr


def test_compose_file_names_real_settings_and_files() -> None:
    # Neither Compose nor pydantic-settings reject an unknown TIDINGS_* variable: it is ignored.
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    dockerfile_env = " ".join(
        line for line in (REPO_ROOT / "Dockerfile").read_text().splitlines() if "TIDINGS_" in line
    )
    names = set(compose["services"]["worker"]["environment"])
    names |= {word.split("=")[0] for word in dockerfile_env.split() if word.startswith("TIDINGS_")}
    fields = {f"TIDINGS_{name.upper()}" for name in Settings.model_fields}
    assert names - fields == set()
    # A missing bind-mount source becomes an empty directory in the container, silently.
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{source} does not exist"


def test_the_worker_is_restarted_when_it_exits_held() -> None:
    """A worker exits 75 when a dependency failed, and only a restart reads the record again."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert compose["services"]["worker"].get("restart") in ("on-failure", "always", "unless-stopped")
