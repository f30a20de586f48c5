"""The internal ticker (``TIDINGS_TICK_SOURCE=internal``, the default) with more than one worker.

Every other integration test publishes its own ticks (``external``) to move time at will; this
one runs the production default. The leader publishes a tick to every partition, including the
ones another worker owns, which under exactly-once must happen outside any partition's
transaction (``Wiring.producer_for`` in ``streams/runtime/app.py``).
"""

from __future__ import annotations

import time

from tests.integration.harness import Deployment

TICK_INTERVAL = 0.5


def test_two_workers_share_the_partitions_and_every_partition_keeps_getting_ticks(deployment: Deployment) -> None:
    dep = deployment
    dep.env.update({"TIDINGS_TICK_SOURCE": "internal", "TIDINGS_TICK_INTERVAL_SECONDS": str(TICK_INTERVAL)})
    workers = [dep.start_worker("w1"), dep.start_worker("w2")]
    dep.wait_partitions_shared(workers, timeout=120)
    settled_at = time.time()
    partitions = dep.settings.partitions
    latest: dict[int, float] = {}

    with dep.reader(dep.topics.ticks) as consumer:
        def every_partition_ticked_since_settled() -> bool:
            # wait_for also fails at once if a worker died (the leader's ticker used to crash it here).
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    latest[msg.partition()] = max(latest.get(msg.partition(), 0.0), msg.timestamp()[1] / 1000)
            return len(latest) == partitions and min(latest.values()) > settled_at + 4 * TICK_INTERVAL

        dep.wait_for(lambda: f"a tick on each of {partitions} partitions after the group settled (latest {latest})",
                     every_partition_ticked_since_settled, timeout=60)
    assert all(w.running for w in workers)
