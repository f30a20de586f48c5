"""The worker's command line (streams/__main__.py): ``TIDINGS_LOG_LEVEL`` becomes the worker's
``-l`` unless the command line names a level itself (Faust's own default would be WARN, and the
image and the chart start the worker with no level); a crash caused by the broker exits 75, not 1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError
from mode.worker import exiting  # what the worker exits through

from streams.__main__ import held_exit, with_log_level
from streams.runtime import guard
from streams.runtime.guard import EXIT_HELD


def test_a_worker_without_a_level_gets_the_settings_level() -> None:
    assert with_log_level(["tidings", "worker"], "info") == ["tidings", "worker", "-l", "info"]
    assert with_log_level(["tidings", "worker", "--without-web"], "debug") == [
        "tidings", "worker", "-l", "debug", "--without-web"]


@pytest.mark.parametrize("given", [["-l", "error"], ["--loglevel", "error"], ["--loglevel=error"], ["-lerror"]])
def test_a_level_on_the_command_line_wins(given: list[str]) -> None:
    argv = ["tidings", "worker", *given]
    assert with_log_level(argv, "debug") == argv


@pytest.mark.parametrize("argv", [["tidings", "--help"], ["tidings"], ["tidings", "tables"]])
def test_other_commands_are_left_alone(argv: list[str]) -> None:
    assert with_log_level(argv, "debug") == argv


@pytest.mark.parametrize(("setting", "faust"), [("debug", "debug"), ("info", "info"), ("warning", "warn"), ("error", "error")])
def test_every_settings_level_is_one_faust_accepts(setting: str, faust: str) -> None:
    from faust.cli.base import LOGLEVELS  # the choices of Faust's -l
    assert with_log_level(["tidings", "worker"], setting)[-1] == faust
    assert faust.upper() in LOGLEVELS  # a case-insensitive choice


def _crashing(error: Exception) -> Callable[[], None]:
    """A worker's command line that crashes with ``error`` and exits as mode's worker does."""
    def run() -> None:
        with exiting():
            raise error
    return run


def test_a_crash_caused_by_the_broker_exits_held() -> None:
    with pytest.raises(SystemExit) as exited:
        held_exit(_crashing(KafkaError("Unexpected error during batch delivery")))
    assert exited.value.code == EXIT_HELD


def test_a_crash_caused_by_a_bug_exits_1() -> None:
    with pytest.raises(SystemExit) as exited:
        held_exit(_crashing(KeyError("x")))
    assert exited.value.code == 1


def test_a_stop_exits_0() -> None:
    with pytest.raises(SystemExit) as exited:
        held_exit(_stopping)
    assert exited.value.code == 0


def _stopping() -> None:
    with exiting():
        pass


@pytest.fixture
def termination_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "termination-log"
    monkeypatch.setattr(guard, "termination_log", path)
    return path


def test_a_crash_caused_by_the_broker_is_written_to_the_termination_log(termination_log: Path) -> None:
    with pytest.raises(SystemExit):
        held_exit(_crashing(KafkaError("Unexpected error during batch delivery")))
    assert termination_log.read_text() == f"crashed (exit {EXIT_HELD}): KafkaError\n"


def test_a_crash_by_a_bug_is_written_with_its_type_never_its_message(termination_log: Path) -> None:
    with pytest.raises(SystemExit):
        held_exit(_crashing(ValueError("customer jana@example.org")))
    assert termination_log.read_text() == "crashed (exit 1): ValueError\n"


def test_a_stop_writes_no_termination_message(termination_log: Path) -> None:
    with pytest.raises(SystemExit):
        held_exit(_stopping)
    assert not termination_log.exists()


def test_a_termination_message_is_cut_to_what_kubernetes_keeps(termination_log: Path) -> None:
    guard.record_termination("x" * 10_000)
    assert len(termination_log.read_bytes()) == guard.TERMINATION_MESSAGE_MAX_BYTES


def test_an_unwritable_termination_log_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(guard, "termination_log", tmp_path / "missing-dir" / "termination-log")
    guard.record_termination("held (exit 75): x failed with OSError\n")
    assert "could not write the termination message" in caplog.text


def _raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise error from cause
    except BaseException as e:  # noqa: BLE001 - the test wants the raised object with its chain
        return e


def test_error_types_name_the_chain_with_tidings_own_text_and_errno_names_only() -> None:
    from streams.errors import InfrastructureFailure

    full = _raised(InfrastructureFailure("table bookings refused a write: Exception: IO error: No space left on device"),
                   _raised(Exception("IO error: No space left on device")))
    assert guard.error_types(full) == (
        "InfrastructureFailure (table bookings refused a write: Exception: IO error: No space left on device) from Exception")
    assert guard.error_types(_raised(OSError(28, "No space left on device"))) == "OSError [ENOSPC]"
    assert guard.error_types(_raised(ValueError("jana@example.org"))) == "ValueError"
