"""Readiness judged from what the worker knows (``streams/health.py``), and the view it reads it from
(``streams/runtime/status.py``) over stand-ins shaped like Faust's consumer and recovery."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from types import SimpleNamespace
from typing import Any, NamedTuple

from streams.health import Health, judge
from streams.runtime.status import RestoreState, WorkerView, worker_view

RUNNING = WorkerView(consumer_started=True, assignment=frozenset({("it.bookings", 0)}), tables_restored=True)
FEEDS = {"it.tenants": True, "it.suppressions": True}


def test_a_running_worker_with_every_check_passed_is_ready() -> None:
    readiness = judge(topics_ready=True, feeds=FEEDS, assigned=True, view=RUNNING)
    assert readiness.ready and readiness.reasons == ()
    assert json.loads(readiness.body())["checks"] == {
        "topics": True, "feeds": FEEDS, "assigned": True, "partitions": 1, "restored": True,
    }


def test_an_empty_assignment_is_ready() -> None:
    idle = WorkerView(consumer_started=True, tables_restored=True)
    assert judge(topics_ready=True, feeds=FEEDS, assigned=True, view=idle).ready


def test_each_check_names_itself_when_it_fails() -> None:
    cases = {
        "topics:": dict(topics_ready=False, feeds=FEEDS, assigned=True, view=RUNNING),
        "feeds: not read to their end yet: it.tenants": dict(
            topics_ready=True, feeds={**FEEDS, "it.tenants": False}, assigned=True, view=RUNNING),
        "assigned: the consumer has not started": dict(topics_ready=True, feeds=FEEDS, assigned=False, view=WorkerView()),
        "assigned: a rebalance is under way": dict(topics_ready=True, feeds=FEEDS, assigned=False, view=RUNNING),
    }
    for reason, kwargs in cases.items():
        readiness = judge(**kwargs)  # type: ignore[arg-type]
        assert not readiness.ready
        assert [r for r in readiness.reasons if r.startswith(reason)], (reason, readiness.reasons)


def test_a_restore_counts_the_rows_to_go() -> None:
    restoring = WorkerView(
        consumer_started=True, rebalancing=True, assignment=RUNNING.assignment, tables_restored=False,
        restoring=(RestoreState("storage.bookings", 0, offset=10, end=110), RestoreState("timers", 0, offset=5, end=5)),
    )
    readiness = judge(topics_ready=True, feeds=FEEDS, assigned=True, view=restoring)
    assert readiness.reasons == ("restored: tables restoring from their changelogs, 100 rows to go",)
    assert readiness.checks["assigned"] and not readiness.checks["restored"]


def test_the_endpoints_answer_200_alive_and_503_with_reasons_until_ready() -> None:
    view = [WorkerView()]
    feeds = {"it.tenants": lambda: True}
    health = Health(lambda: view[0], feeds)
    assert asyncio.run(health.healthz())[0] == 200
    status, content_type, body = asyncio.run(health.readyz())
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body)["status"] == "not ready"
    health.topics_ready = True
    health.on_assigned({("it.bookings", 0)})
    view[0] = RUNNING
    assert asyncio.run(health.readyz())[0] == 200
    health.on_revoked()
    assert asyncio.run(health.readyz())[0] == 503


class TP(NamedTuple):
    topic: str
    partition: int


class _Event:
    def __init__(self, is_set: bool) -> None:
        self._set = is_set

    def is_set(self) -> bool:
        return self._set


def _app(*, completed: bool, in_recovery: bool, highwaters: dict[TP, int | None], committed: dict[TP, int]) -> Any:
    changelog = TP("it-storage.bookings-changelog", 0)
    consumer = SimpleNamespace(
        assignment=lambda: {*highwaters, changelog},
        highwater=lambda tp: highwaters[tp],
        _committed_offset=committed,
    )
    recovery = SimpleNamespace(
        completed=_Event(completed), in_recovery=in_recovery,
        active_highwaters=Counter({changelog: 99}), active_offsets=Counter({changelog: 40}),
        tp_to_table={changelog: SimpleNamespace(name="storage.bookings")},
    )
    tables = SimpleNamespace(recovery=recovery, changelog_topics={changelog.topic})
    return SimpleNamespace(_consumer=consumer, tables=tables, rebalancing=in_recovery)


def test_the_view_reads_lag_as_high_watermark_minus_committed_for_input_partitions_only() -> None:
    a, b, c = TP("it.bookings", 0), TP("it.bookings", 1), TP("it.ticks", 0)
    view = worker_view(_app(completed=True, in_recovery=False, highwaters={a: 120, b: None, c: 7}, committed={a: 100}))
    assert view.consumer_started and view.tables_restored and view.restoring == ()
    assert view.lag == {("it.bookings", 0): 20}  # b: nothing fetched yet, c: nothing committed: unknown, not 0
    empty = worker_view(_app(completed=True, in_recovery=False, highwaters={c: 0}, committed={}))
    assert empty.lag == {("it.ticks", 0): 0}  # an empty partition has no lag, committed or not
    assert ("it-storage.bookings-changelog", 0) in view.assignment


def test_the_view_reports_restore_progress_while_recovering() -> None:
    view = worker_view(_app(completed=False, in_recovery=True, highwaters={}, committed={}))
    assert not view.tables_restored and view.rebalancing
    assert view.restoring == (RestoreState("storage.bookings", 0, offset=40, end=99),)
    assert view.restoring[0].remaining == 59


def test_the_view_of_an_app_without_a_consumer_is_empty() -> None:
    assert worker_view(SimpleNamespace(_consumer=None)) == WorkerView()
