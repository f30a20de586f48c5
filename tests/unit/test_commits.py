from __future__ import annotations

import asyncio

from streams.runtime.commits import CommitWatch


def test_a_write_is_committed_by_the_first_commit_of_its_partition_that_started_after_it() -> None:
    async def main() -> list[str]:
        watch, order = CommitWatch(), []
        first = watch.written()
        upto = watch.snapshot()  # a commit starts: it carries `first`
        second = watch.written()  # written while that commit runs: not carried

        async def waiter(name: str, partition: int, seq: int) -> None:
            await watch.wait(partition, seq)
            order.append(name)

        tasks = [asyncio.ensure_future(waiter(n, p, s)) for n, p, s in (("first", 0, first), ("second", 0, second),
                                                                        ("other", 1, first))]
        await asyncio.sleep(0)
        watch.committed({0}, upto)
        await asyncio.sleep(0)
        assert order == ["first"]  # partition 1 was not in that commit, `second` came too late
        watch.committed({0, 1}, watch.snapshot())
        await asyncio.sleep(0)
        assert sorted(order) == ["first", "other", "second"]
        await asyncio.gather(*tasks)
        await watch.wait(0, first)  # already committed: returns at once
        return order

    asyncio.run(main())


def test_a_rebalance_releases_every_waiter() -> None:
    async def main() -> None:
        watch = CommitWatch()
        task = asyncio.ensure_future(watch.wait(3, watch.written()))
        await asyncio.sleep(0)
        assert not task.done()
        watch.release_all()
        await asyncio.wait_for(task, 1)

    asyncio.run(main())
