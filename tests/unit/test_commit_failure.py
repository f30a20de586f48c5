"""A commit that raises while the worker runs exits held (75); one that raises while it stops does not;
a commit of a second or more is logged.

The broker can go away under a commit (CI: a broker restart closed the connection under
AddOffsetsToTxn and aiokafka's sender routine died). The transactions' outcome is then unknown, and
the worker must stop without a final commit so that they abort: ``TidingsConsumer._commit_failed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from streams.runtime.transport import TidingsConsumer


class _Stopped(Exception):
    pass


def _consumer(make: Callable[[str], TidingsConsumer], failures: list[tuple[str, str]]) -> TidingsConsumer:
    consumer = make("commit-failure")

    def on_commit_failure(error: BaseException, where: str) -> None:
        failures.append((type(error).__name__, where))
        raise _Stopped  # stands for os._exit: nothing after it runs

    consumer.on_commit_failure = on_commit_failure  # type: ignore[method-assign]
    return consumer


async def _failing_commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
    raise KafkaError("KafkaConnectionError('Connection at 127.0.0.1:1 closed')")


@pytest.fixture
def failing(
    offline_consumer: Callable[[str], TidingsConsumer], monkeypatch: pytest.MonkeyPatch
) -> tuple[TidingsConsumer, list[tuple[str, str]]]:
    """Tidings' consumer whose Faust commit raises as aiokafka's dead sender routine made it raise,
    and the list its (stand-in) exit records into."""
    failures: list[tuple[str, str]] = []
    consumer = _consumer(offline_consumer, failures)
    monkeypatch.setattr(aiokafka_driver.Consumer, "_commit_offsets", _failing_commit)
    return consumer, failures


def test_a_failed_commit_of_a_running_worker_exits_held(failing: tuple[TidingsConsumer, list[tuple[str, str]]]) -> None:
    consumer, failures = failing
    with pytest.raises(_Stopped):
        consumer.loop.run_until_complete(consumer._commit_offsets({TP("t", 0): 5, TP("t", 1): 7}))
    assert failures == [("KafkaError", "the commit of 2 partitions")]


def test_a_failed_commit_of_a_stopping_worker_raises_for_on_stop_to_log(
    failing: tuple[TidingsConsumer, list[tuple[str, str]]]
) -> None:
    consumer, failures = failing
    consumer._stopped.set()  # what mode's Service.stop sets before the consumer's on_stop commits
    with pytest.raises(KafkaError):
        consumer.loop.run_until_complete(consumer._commit_offsets({TP("t", 0): 5}))
    assert failures == []


def test_a_failed_commit_of_an_open_transaction_exits_held(
    offline_consumer: Callable[[str], TidingsConsumer], monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[tuple[str, str]] = []
    consumer = _consumer(offline_consumer, failures)

    class _Producer:
        async def drain_for_commit(self) -> None:
            return None

        async def commit_open_transaction(self, transactional_id: str) -> bool:
            raise KafkaError("Unexpected error during batch delivery")

    class _Assignor:
        def group_for_topic(self, topic: str) -> int:
            return 0

    consumer.in_transaction = True
    consumer.app.producer = _Producer()  # type: ignore[assignment]
    monkeypatch.setattr(type(consumer.app), "assignor", property(lambda self: _Assignor()))
    with pytest.raises(_Stopped):
        consumer.loop.run_until_complete(consumer.commit_transactions_of({3}, "outbound"))
    assert failures == [("KafkaError", "the commit of partition 3's open transaction")]


def test_a_slow_commit_is_logged_once_in_its_interval_with_the_count_of_the_others(
    offline_consumer: Callable[[str], TidingsConsumer], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """mode's overlapping-timer warning is dropped for the commit timer, so a commit of seconds is
    logged by Tidings itself: once per ``slow_commit_log_seconds``, then with how many there were."""
    consumer = offline_consumer("slow-commit")
    consumer.slow_commit_seconds = 0.01
    consumer.slow_commit_log_seconds = 3600.0

    async def slow_commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        await asyncio.sleep(0.02)
        return True

    async def fast_commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        return True

    monkeypatch.setattr(aiokafka_driver.Consumer, "_commit_offsets", fast_commit)
    consumer.loop.run_until_complete(consumer._commit_offsets({TP("t", 0): 5}))
    assert "took" not in caplog.text
    monkeypatch.setattr(aiokafka_driver.Consumer, "_commit_offsets", slow_commit)
    for _ in range(3):
        consumer.loop.run_until_complete(consumer._commit_offsets({TP("t", 0): 5, TP("t", 1): 6}))
    warnings = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("a commit of 2 partitions took"), warnings
    consumer.slow_commit_log_seconds = 0.0  # the interval is over: the next one says how many there were
    consumer.loop.run_until_complete(consumer._commit_offsets({TP("t", 0): 5}))
    assert "(3 commits of" in [r.getMessage() for r in caplog.records if "took" in r.getMessage()][-1]
