"""The worker's command line (streams/__main__.py): ``TIDINGS_LOG_LEVEL`` becomes the worker's
``-l`` unless the command line names a level itself (Faust's own default would be WARN, and the
image and the chart start the worker with no level)."""

from __future__ import annotations

import pytest

from streams.__main__ import with_log_level


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
