"""``transport.urgent_first``: a record of an urgent topic never waits behind a batch of others.

The fetcher here keeps aiokafka's ``Fetcher.fetched_records`` contract (pinned in
``streams/runtime/contract.py``): records drained partition by partition in the order they were
fetched, ``max_records`` filled in that order, an empty partition set meaning every partition, and
a zero timeout that returns at once. The real fetcher is exercised by the sender benchmark and every
integration test; this is the choice of what to ask it for, which is pure code.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP

from streams.runtime.transport import urgent_first

OUTBOUND = [TP("outbound", p) for p in range(4)]
PRIORITY = [TP("outbound-priority", p) for p in range(4)]
URGENT = frozenset({"outbound-priority"})


class Fetched:
    """Records already fetched, per partition, in the order aiokafka would drain them."""

    def __init__(self, records: dict[TP, list[str]]) -> None:
        self.records = {tp: list(rs) for tp, rs in records.items()}
        self.calls: list[tuple[set[TP], float | None, int | None]] = []

    async def fetched_records(self, partitions: set[TP], timeout: float | None = 0, max_records: int | None = None) -> dict[TP, list[str]]:
        self.calls.append((set(partitions), timeout, max_records))
        drained: dict[TP, list[str]] = {}
        for tp in list(self.records):
            if partitions and tp not in partitions:
                continue
            take = self.records[tp] if max_records is None else self.records[tp][:max_records]
            if not take:
                continue
            drained[tp] = take
            self.records[tp] = self.records[tp][len(take):]
            if max_records is not None:
                max_records -= len(take)
                if max_records == 0:
                    break
        return drained


def fetch(fetched: Fetched, active: set[TP], urgent: frozenset[str] = URGENT, max_records: int | None = 200) -> Any:
    return asyncio.run(urgent_first(fetched, active, urgent, timeout=1.0, max_records=max_records))


def test_urgent_records_come_with_the_batch_even_when_the_backlog_alone_would_fill_it() -> None:
    backlog = {tp: [f"{tp.partition}-{n}" for n in range(300)] for tp in OUTBOUND}
    fetched = Fetched({**backlog, PRIORITY[2]: ["reset-1", "reset-2"]})
    active = set(OUTBOUND) | set(PRIORITY)
    batch = fetch(fetched, active)
    assert batch[PRIORITY[2]] == ["reset-1", "reset-2"]
    assert sum(len(rs) for tp, rs in batch.items() if tp.topic == "outbound") == 200
    # Without the urgent topic first, the same bounded ask is all backlog: what the agents used to get.
    plain = Fetched({**backlog, PRIORITY[2]: ["reset-1", "reset-2"]})
    assert PRIORITY[2] not in fetch(plain, active, urgent=frozenset())


def test_with_nothing_urgent_fetched_it_waits_on_every_active_partition_once() -> None:
    fetched = Fetched({OUTBOUND[0]: ["a", "b"]})
    active = set(OUTBOUND) | set(PRIORITY)
    assert fetch(fetched, active) == {OUTBOUND[0]: ["a", "b"]}
    # one quick look at the urgent partitions, then one wait (with the timeout) over all of them
    assert fetched.calls == [(set(PRIORITY), 0, None), (active, 1.0, 200)]


def test_only_urgent_partitions_active_never_asks_for_an_empty_set() -> None:
    # aiokafka reads an empty partition set as "every partition", paused ones included.
    fetched = Fetched({PRIORITY[0]: ["reset"], OUTBOUND[0]: ["paused backlog"]})
    assert fetch(fetched, set(PRIORITY)) == {PRIORITY[0]: ["reset"]}
    assert all(partitions for partitions, _, _ in fetched.calls)
    assert fetched.records[OUTBOUND[0]] == ["paused backlog"]


def test_no_urgent_topic_is_the_plain_fetch() -> None:
    fetched = Fetched({OUTBOUND[1]: ["x"]})
    assert fetch(fetched, set(OUTBOUND), urgent=frozenset()) == {OUTBOUND[1]: ["x"]}
    assert fetched.calls == [(set(OUTBOUND), 1.0, 200)]

