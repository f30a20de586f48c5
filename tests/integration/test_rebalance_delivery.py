"""A rebalance while mails are in flight sends nothing twice.

Every partition is revoked at a rebalance (Kafka's eager protocol, which Faust uses). The records
being sent at that moment must finish, and their outcomes commit with their offsets, before the
partitions move; otherwise the next owner finds their ledger entries at ``sending`` and sends
them again (``streams/runtime/transport.py``, ``TidingsConsumer.on_partitions_revoked``). The SES
stand-in holds every answer, so that requests are in flight whenever the group rebalances.
"""

from __future__ import annotations

import collections
from pathlib import Path

from deploy.sesstub import SesStub
from tests.integration.harness import Deployment
from tests.integration.mailload import publish_bookings

MAILS = 1000
LATER = 200  # published once both workers share the partitions, so that the second has mails of its own
ANSWER_MS = 300  # SES's answer held this long: with 16 requests in flight, about 50 mails/s,
# so the second worker is up (5-10 s) long before the first has sent them all


def test_a_worker_joining_while_mails_are_in_flight_sends_nothing_twice(deployment: Deployment, tmp_path: Path) -> None:
    dep = deployment
    with SesStub(tmp_path / "sesstub") as stub:
        stub.faults(latency_ms=ANSWER_MS)
        dep.env.update({
            "TIDINGS_SES_ENDPOINT_URL": stub.endpoint,
            "TIDINGS_SES_MAX_SEND_RATE": "400",
            "TIDINGS_SENDER_CONCURRENCY": "16",
        })
        first = dep.start_worker("w1")
        expected = publish_bookings(dep, range(MAILS))

        def arrived() -> collections.Counter[str]:
            return collections.Counter(r for r in stub.stats().recipients if r in expected)

        dep.wait_for(lambda: f"a quarter of {MAILS} mails at SES", lambda: len(arrived()) >= MAILS // 4, 120)
        second = dep.start_worker("w2")  # the group rebalances with requests in flight on w1
        dep.wait_partitions_shared([first, second])
        # w1 may already have sent every mail of the partitions w2 took (it can drain them one
        # after the other), which left w2 nothing to send: mails published now land on both.
        expected |= publish_bookings(dep, range(MAILS, MAILS + LATER))
        dep.wait_for(lambda: f"all {MAILS + LATER} mails at SES", lambda: len(arrived()) == MAILS + LATER, 300)
        dep.wait_settled(MAILS + LATER, timeout=120)
        per_recipient = arrived()
        doubled = {r: n for r, n in per_recipient.items() if n > 1}
        print(f"\nrebalance mid-stream: {len(per_recipient)} sent, {sum(doubled.values()) - len(doubled)} duplicates")
        assert not doubled
        # w2 took over partitions: had it found an entry at "sending" it would have counted it
        assert dep.metric(second, "tidings_delivery_unknown_outcomes_total") == 0
        assert dep.metric(first, "tidings_delivery_unknown_outcomes_total") == 0
        assert dep.metric(second, "tidings_emails_sent_total") > 0, "w2 never took a partition: no rebalance was tested"
