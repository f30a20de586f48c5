"""``tidings-tick``: publish ticks, i.e. tell the workers what time it is.

With ``TIDINGS_TICK_SOURCE=external`` the workers have no clock of their own for timers: time
advances only when ticks arrive. This is how tests and replays run months in seconds, and how a
developer asks "what would fire on the 1st of December at 09:00?" against a copy of the topics::

    tidings-tick --now 2026-12-01T09:00:00+01:00
    tidings-tick --from 2026-11-24T00:00Z --to 2026-12-31T00:00Z --step 1h

Every tick goes to every partition of the ticks topic (each partition's timers are fired by the
worker that owns it). Ticks of one run are published in order and flushed before it exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Iterator

from streams.settings import Settings
from streams.topics import TopicNames
from streams.triggers.agents import tick_value

_STEP = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no zone; write e.g. 2026-12-01T09:00:00+01:00 or ...Z")
    return value


def step(text: str) -> dt.timedelta:
    match = _STEP.match(text)
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a step like 30s, 15m, 1h or 1d")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def instants(start: dt.datetime, end: dt.datetime, every: dt.timedelta) -> Iterator[dt.datetime]:
    now = start
    while now <= end:
        yield now
        now += every


class TickPublisher:
    """Publishes ticks to every partition of the ticks topic (used by this CLI and the tests)."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Producer

        self.topic = TopicNames.from_settings(settings).ticks
        self.partitions = settings.partitions
        self._producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})

    def tick(self, now: dt.datetime) -> None:
        value = tick_value(now)
        for p in range(self.partitions):
            self._producer.produce(self.topic, value=value, partition=p)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        if self._producer.flush(timeout):
            raise RuntimeError(f"ticks not delivered to {self.topic} within {timeout}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidings-tick", description=__doc__.split("\n\n")[0])
    parser.add_argument("--now", type=instant, help="one tick at this instant")
    parser.add_argument("--from", dest="start", type=instant, help="ticks from this instant ...")
    parser.add_argument("--to", dest="end", type=instant, help="... to this one (inclusive) ...")
    parser.add_argument("--step", type=step, default=dt.timedelta(hours=1), help="... this far apart (default 1h)")
    args = parser.parse_args(argv)
    if (args.now is None) == (args.start is None):
        parser.error("give --now, or --from and --to")
    if args.start is not None and (args.end is None or args.end < args.start):
        parser.error("--to must be given and not before --from")
    publisher = TickPublisher(Settings())
    times = [args.now] if args.now else list(instants(args.start, args.end, args.step))
    for now in times:
        publisher.tick(now)
    publisher.flush()
    print(f"tidings-tick: {len(times)} tick(s) to {publisher.partitions} partitions of {publisher.topic}, "
          f"last {times[-1].isoformat()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
