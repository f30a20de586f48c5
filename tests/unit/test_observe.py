"""The gauges a worker computes about itself (``streams/observe.py``) and the SES quota poll
(``streams/delivery/quota.py``), over stand-in views and senders: no I/O."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from streams import metrics
from streams.delivery.quota import parse_account, quota_poller
from streams.observe import Observer
from streams.runtime.status import RestoreState, WorkerView
from streams.triggers.index import TimerIndex

ACCOUNT = {
    "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 1234.0},
    "SendingEnabled": True, "EnforcementStatus": "PROBATION", "ProductionAccessEnabled": True,
}


def _value(m: metrics.Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def _observer(m: metrics.Metrics, views: list[WorkerView], due: list[float | None], ready: bool = True) -> Observer:
    return Observer(m, lambda: views[0], lambda: ready, lambda: due[0], lambda: 1000.0)


def test_lag_is_exported_per_held_partition_and_dropped_when_the_partition_leaves() -> None:
    m = metrics.create(CollectorRegistry())
    views = [WorkerView(consumer_started=True, tables_restored=True, lag={("it.bookings", 0): 7, ("it.bookings", 1): 0})]
    observer = _observer(m, views, [None])
    observer.refresh()
    assert _value(m, "tidings_consumer_lag_records", topic="it.bookings", partition="0") == 7
    assert _value(m, "tidings_consumer_lag_records", topic="it.bookings", partition="1") == 0
    assert _value(m, "tidings_worker_ready") == 1
    views[0] = WorkerView(consumer_started=True, tables_restored=True, lag={("it.bookings", 1): 3})
    observer.refresh()
    assert _value(m, "tidings_consumer_lag_records", topic="it.bookings", partition="0") is None
    assert _value(m, "tidings_consumer_lag_records", topic="it.bookings", partition="1") == 3


def test_restore_progress_counts_rows_from_where_the_restore_started_and_ends_at_zero_to_go() -> None:
    m = metrics.create(CollectorRegistry())
    restoring = lambda offset: WorkerView(  # noqa: E731
        consumer_started=True, restoring=(RestoreState("storage.bookings", 0, offset=offset, end=500),
                                          RestoreState("storage.bookings", 1, offset=0, end=100)))
    views = [restoring(100)]
    observer = _observer(m, views, [None], ready=False)
    observer.refresh()
    assert _value(m, "tidings_restore_rows_remaining", table="storage.bookings") == 500
    assert _value(m, "tidings_restore_rows_restored", table="storage.bookings") == 0
    views[0] = restoring(300)
    observer.refresh()
    assert _value(m, "tidings_restore_rows_remaining", table="storage.bookings") == 300
    assert _value(m, "tidings_restore_rows_restored", table="storage.bookings") == 200
    assert _value(m, "tidings_worker_ready") == 0
    views[0] = WorkerView(consumer_started=True, tables_restored=True)
    observer.refresh()
    assert _value(m, "tidings_restore_rows_remaining", table="storage.bookings") == 0
    assert _value(m, "tidings_restore_rows_restored", table="storage.bookings") == 200  # the last restore's count


def test_the_oldest_due_timer_age_is_zero_when_none_is_due() -> None:
    m = metrics.create(CollectorRegistry())
    due: list[float | None] = [None]
    observer = _observer(m, [WorkerView()], due)
    observer.refresh()
    assert _value(m, "tidings_timer_oldest_due_seconds") == 0
    due[0] = 1000.0 - 42.5
    observer.refresh()
    assert _value(m, "tidings_timer_oldest_due_seconds") == 42.5
    due[0] = 2000.0  # not due yet
    observer.refresh()
    assert _value(m, "tidings_timer_oldest_due_seconds") == 0


def test_the_index_names_its_earliest_due_time_over_ready_partitions() -> None:
    index = TimerIndex()
    assert index.earliest_any() is None
    index.rebuild(0, [("a", 50.0), ("b", 20.0)])
    index.rebuild(3, [("c", 30.0)])
    assert index.earliest_any() == 20.0
    index.set(0, "b", None)
    assert index.earliest_any() == 30.0


def test_the_loop_sample_sets_the_lag_gauge() -> None:
    m = metrics.create(CollectorRegistry())
    asyncio.run(_observer(m, [WorkerView()], [None]).sample_loop())
    lag = _value(m, "tidings_event_loop_lag_seconds")
    assert lag is not None and 0 <= lag < 1


def test_build_info_and_process_metrics() -> None:
    m = metrics.with_process_metrics(metrics.create(CollectorRegistry()), "stateless")
    samples = [s for family in m.registry.collect() for s in family.samples]
    info = [s for s in samples if s.name == "tidings_build_info"]
    assert len(info) == 1 and info[0].value == 1
    assert set(info[0].labels) == {"version", "faust_version", "aiokafka_version", "python_version", "role"}
    assert info[0].labels["role"] == "stateless"
    assert info[0].labels["faust_version"] == "0.15.3"
    assert any(s.name == "process_resident_memory_bytes" for s in samples)


def test_get_account_parses_into_the_quota_gauges() -> None:
    account = parse_account(ACCOUNT)
    assert (account.max_send_rate, account.max_24h_send, account.sent_last_24h) == (14.0, 50000.0, 1234.0)
    assert account.sending_enabled and account.enforcement_status == "PROBATION"

    class Sender:
        async def account(self) -> dict[str, Any]:
            return ACCOUNT

    m = metrics.create(CollectorRegistry())
    poll = quota_poller(Sender(), m)
    assert poll is not None
    asyncio.run(poll())
    assert _value(m, "tidings_ses_max_send_rate") == 14
    assert _value(m, "tidings_ses_max_24h_send") == 50000
    assert _value(m, "tidings_ses_sent_last_24h") == 1234
    assert _value(m, "tidings_ses_sending_enabled") == 1
    assert _value(m, "tidings_ses_enforcement_status", status="PROBATION") == 1
    assert _value(m, "tidings_ses_enforcement_status", status="HEALTHY") == 0
    assert _value(m, "tidings_ses_account_polls_total", outcome="ok") == 1


def test_a_failed_poll_is_counted_and_keeps_the_last_quota() -> None:
    answers: list[Any] = [ACCOUNT, RuntimeError("503")]

    class Sender:
        async def account(self) -> dict[str, Any]:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[no-any-return]

    m = metrics.create(CollectorRegistry())
    poll = quota_poller(Sender(), m)
    assert poll is not None
    asyncio.run(poll())
    asyncio.run(poll())
    assert _value(m, "tidings_ses_max_send_rate") == 14
    assert _value(m, "tidings_ses_account_polls_total", outcome="error") == 1


def test_an_answer_that_is_no_get_account_is_an_error_not_sending_disabled() -> None:
    class Sender:
        async def account(self) -> dict[str, Any]:
            return {}  # moto answers its catch-all route like this

    m = metrics.create(CollectorRegistry())
    poll = quota_poller(Sender(), m)
    assert poll is not None
    asyncio.run(poll())
    assert _value(m, "tidings_ses_account_polls_total", outcome="error") == 1
    assert _value(m, "tidings_ses_account_polls_total", outcome="ok") is None  # the alert ignores the initial 0


def test_a_sender_without_an_account_is_not_polled() -> None:
    assert quota_poller(object(), metrics.create(CollectorRegistry())) is None
