"""The worker's command line (streams/__main__.py): ``TIDINGS_LOG_LEVEL`` becomes the worker's
``-l`` unless the command line names a level itself (Faust's own default would be WARN, and the
image and the chart start the worker with no level); a crash caused by the broker exits 75, not 1."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka.errors import KafkaError
from mode.worker import exiting  # what the worker exits through

from streams.__main__ import held_exit, with_log_level
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
