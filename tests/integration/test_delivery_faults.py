"""The sender under faults, on the real broker and the SES emulator, with a fault proxy where
the emulator cannot fail by itself (``deploy/local/fault_proxy.py``).

Each test prints its tally (sent / duplicates / lost); ``make bench`` runs the same scenarios at
the issue's full sizes (``tests/benchmarks/test_sender.py``).
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterator

import pytest

from deploy.local.fault_proxy import FaultProxy
from deploy.local.kafka_broker import LocalBroker
from tests.integration.harness import Deployment, worker_env
from tests.integration.mailload import publish_bookings, tally, wait_arrived

RATE = 80  # recipients per second, the "account quota" of these tests
CONCURRENCY = 8
UNCOMMITTED = 16  # the in-flight bound: requests whose outcome may not be committed yet


@pytest.fixture
def proxy(deployment: Deployment) -> Iterator[FaultProxy]:
    with FaultProxy(deployment.ses_endpoint) as p:
        deployment.env.update({
            "TIDINGS_SES_ENDPOINT_URL": p.endpoint,
            "TIDINGS_SES_MAX_SEND_RATE": str(RATE),
            "TIDINGS_SENDER_CONCURRENCY": str(CONCURRENCY),
            "TIDINGS_SES_TIMEOUT_SECONDS": "5",
        })
        yield p


def test_sigkill_mid_stream_loses_nothing_and_doubles_at_most_the_mails_in_flight(
    deployment: Deployment, proxy: FaultProxy
) -> None:
    dep = deployment
    dep.env["TIDINGS_SENDER_MAX_UNCOMMITTED"] = str(UNCOMMITTED)
    worker = dep.start_worker()
    expected = publish_bookings(dep, range(400))
    wait_arrived(dep, expected, 100)
    worker.kill()
    worker.start()
    dep.wait_settled(len(expected), timeout=180)
    result = tally(dep, expected)
    unknown = dep.metric(worker, "tidings_delivery_unknown_outcomes_total")
    print(f"\nSIGKILL mid-stream: {result}; unknown outcomes counted after restart {unknown:.0f}")
    assert result.lost == 0, result
    # Every extra copy was a mail in flight at the kill, found "sending" and counted, not silent.
    assert result.duplicates <= unknown <= UNCOMMITTED, f"{result}; unknown outcomes counted {unknown}"


def test_a_graceful_stop_mid_stream_sends_nothing_twice(deployment: Deployment, proxy: FaultProxy) -> None:
    dep = deployment
    worker = dep.start_worker()
    expected = publish_bookings(dep, range(300))
    wait_arrived(dep, expected, 80)
    assert worker.stop() == 0
    worker.start()
    dep.wait_settled(len(expected), timeout=180)
    result = tally(dep, expected)
    print(f"\ngraceful stop mid-stream: {result}")
    assert (result.lost, result.duplicates) == (0, 0)
    assert dep.metric(worker, "tidings_delivery_unknown_outcomes_total") == 0


def test_throttling_delays_mail_but_never_sends_above_the_quota(deployment: Deployment, proxy: FaultProxy) -> None:
    dep = deployment
    dep.start_worker().wait_serving()
    proxy.throttle(0.3, seed=11, seconds=12)
    expected = publish_bookings(dep, range(400))
    dep.wait_settled(len(expected), timeout=180)
    result, stats = tally(dep, expected), proxy.stats()
    print(f"\n30% throttled for 12 s: {result}; throttled answers {stats.faulted}, "
          f"peak accepted sends in any second {stats.peak_sends(1.0)} (quota {RATE})")
    assert (result.lost, result.duplicates) == (0, 0)
    assert stats.faulted > 0  # the fault did meet the sender
    assert stats.peak_sends(1.0) <= RATE


def test_the_backlog_drains_after_ses_was_unavailable(deployment: Deployment, proxy: FaultProxy) -> None:
    dep = deployment
    worker = dep.start_worker()
    worker.wait_serving()
    proxy.unavailable(seconds=15)
    expected = publish_bookings(dep, range(150))
    dep.wait_metric("tidings_send_retries_total", 1)
    dep.wait_settled(len(expected), timeout=180)
    result = tally(dep, expected)
    print(f"\nSES unavailable for 15 s: {result}; retries {dep.metric(worker, 'tidings_send_retries_total'):.0f}")
    assert (result.lost, result.duplicates) == (0, 0)


def test_permanent_rejections_are_dead_lettered_and_the_others_sent(deployment: Deployment, proxy: FaultProxy) -> None:
    dep = deployment
    dep.start_worker().wait_serving()
    proxy.reject("rejectme")  # the recipients tagged so below
    good = publish_bookings(dep, range(100))
    bad = publish_bookings(dep, range(10), tag="rejectme")
    statuses = dep.wait_settled(len(good) + len(bad), timeout=120)
    result = tally(dep, good)
    print(f"\npermanent rejections: {result}; rejected {len(bad)}")
    assert (result.lost, result.duplicates) == (0, 0)
    assert tally(dep, bad).sent == 0
    assert collections.Counter(s[-1]["status"] for s in statuses.values()) == {"SENT": 100, "FAILED": 10}
    dead = dep.read_topic(dep.topics.dead_letter, 10)
    reasons = collections.Counter(dict(m.headers())["tidings.reason"].decode() for m in dead)
    assert reasons == {"rejected_by_provider": 10}


def test_a_request_without_answer_is_counted_and_resent(deployment: Deployment, proxy: FaultProxy) -> None:
    """The proxy drops the connection: the sender cannot know whether SES took the mail."""
    dep = deployment
    worker = dep.start_worker()
    worker.wait_serving()
    proxy.unavailable("reset")
    expected = publish_bookings(dep, range(30))
    dep.wait_for("a dropped request", lambda: proxy.stats().faulted >= 3)
    proxy.heal()
    dep.wait_settled(len(expected))
    result = tally(dep, expected)
    assert (result.lost, result.duplicates) == (0, 0)  # the proxy never forwarded a dropped request
    assert dep.metric(worker, "tidings_delivery_unknown_outcomes_total", cause="no_answer", policy="resend") >= 1


def test_with_the_dead_letter_policy_an_unanswered_mail_waits_for_an_operator(
    deployment: Deployment, proxy: FaultProxy
) -> None:
    dep = deployment
    dep.env["TIDINGS_UNKNOWN_OUTCOME"] = "dead_letter"
    worker = dep.start_worker()
    worker.wait_serving()
    proxy.unavailable("reset")
    expected = publish_bookings(dep, range(5))
    statuses = dep.wait_settled(len(expected))
    proxy.heal()
    assert tally(dep, expected).sent == 0
    assert {s[-1]["status"] for s in statuses.values()} == {"FAILED"}
    dead = dep.read_topic(dep.topics.dead_letter, 5)
    assert {dict(m.headers())["tidings.reason"].decode() for m in dead} == {"outcome_unknown"}
    assert dep.metric(worker, "tidings_delivery_unknown_outcomes_total", cause="no_answer", policy="dead_letter") == 5


def test_a_broker_restart_mid_stream_loses_nothing_and_doubles_nothing(
    ses_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A broker of its own (the session's serves every other test), stopped and started again on
    the same data while the worker renders and sends.

    The worker runs supervised, as in production: if the outage falls under a write it cannot
    finish (a transaction's commit, the producer buffer), it exits with 75 without acknowledging
    and is started again; whether it rides the outage out or restarts depends on where the outage
    lands. Riding it out, every mail is sent once; an exit is a crash to the sender, which may
    send again the mails in flight at that moment, at most the uncommitted bound.
    """
    broker = LocalBroker(tmp_path_factory.mktemp("restarted-broker")).start()
    try:
        run = uuid.uuid4().hex[:8]
        dep = Deployment(run=run, bootstrap=broker.bootstrap, ses_endpoint=ses_endpoint,
                         workdir=tmp_path_factory.mktemp("broker-restart"),
                         env=worker_env(run, broker.bootstrap, ses_endpoint))
        dep.env.update({"TIDINGS_SES_MAX_SEND_RATE": str(RATE), "TIDINGS_SENDER_CONCURRENCY": str(CONCURRENCY),
                        "TIDINGS_SENDER_MAX_UNCOMMITTED": str(UNCOMMITTED)})
        dep.create_topics()
        dep.publish_tenants()
        try:
            worker = dep.start_worker()
            worker.supervised = True
            expected = publish_bookings(dep, range(300))
            wait_arrived(dep, expected, 60)
            broker.restart()
            dep.wait_settled(len(expected), timeout=240)
            result = tally(dep, expected)
            print(f"\nbroker restarted mid-stream: {result}; the worker exited held {len(worker.held_exits)} times")
            assert result.lost == 0, result
            assert result.duplicates <= (UNCOMMITTED * len(worker.held_exits)), (result, worker.held_exits)
        finally:
            dep.close()
    finally:
        broker.stop()
