"""The timers that follow the commits (streams/runtime/app.py, streams/runtime/transport.py): a
commit that outlasts its interval is normal under load and logs nothing, while other timers still
warn; and Faust's per-partition livelock check runs at most once a second however short the commit
interval. mode's own Timer is driven with a clock the test moves; no broker."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from mode.timers import Timer

from streams.runtime.app import new_app
from streams.runtime.transport import TidingsConsumer
from streams.settings import Settings


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _overlap(name: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """One iteration of ``name``'s timer whose work took five intervals: what mode logged."""
    clock = _Clock()
    timer = Timer(0.04, name=name, clock=clock)
    timer.tick()  # the first wake-up
    clock.now += 0.04  # slept its interval
    timer.on_before_yield()
    clock.now += 0.2  # then the work took 200 ms
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mode.timers"):
        timer.tick()
    return [r.getMessage() for r in caplog.records if r.name == "mode.timers"]


@pytest.fixture(autouse=True)
def _app() -> None:
    new_app(Settings())  # installs the filter, as a worker's start does


@pytest.mark.parametrize("name", ["commit", "livelock", "tidings.commit_waiting_outcomes"])
def test_a_long_commit_logs_no_overlap_warning(name: str, caplog: pytest.LogCaptureFixture) -> None:
    assert _overlap(name, caplog) == []


def test_other_timers_still_warn_when_they_overlap(caplog: pytest.LogCaptureFixture) -> None:
    assert any("Timer tidings.tick is overlapping" in m for m in _overlap("tidings.tick", caplog))


def test_the_filter_is_installed_once() -> None:
    new_app(Settings())
    filters = [f for f in logging.getLogger("mode.timers").filters if type(f).__name__ == "QuietCommitTimers"]
    assert len(filters) == 1


class _Slept(Exception):
    pass


@pytest.fixture
def consumer(offline_consumer: Callable[[str], TidingsConsumer]) -> TidingsConsumer:
    return offline_consumer("commit-timers")


@pytest.mark.parametrize(("commit_interval", "expected"), [(0.04, 1.0), (0.1, 1.0), (2.8, 7.0)])
def test_the_livelock_check_runs_at_most_once_a_second(consumer: TidingsConsumer, monkeypatch: pytest.MonkeyPatch,
                                                       commit_interval: float, expected: float) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        raise _Slept

    monkeypatch.setattr(consumer, "sleep", sleep)
    consumer.commit_interval = commit_interval
    with pytest.raises(_Slept):
        consumer.loop.run_until_complete(type(consumer)._commit_livelock_detector.fun(consumer))
    assert slept == [pytest.approx(expected)]
