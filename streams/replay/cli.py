"""tidings-replay: what a range of inbound records would send, through the worker's own code.

    tidings-replay [--dry-run] [--from T|P:O,..] [--to T|P:O,..] [--topic T]... [--limit N]
                   [--tenant ID] [--trigger PACK/TRIGGER] [--out FILE] [--html DIR] [--show-recipients]
                   [--processes N]   (a dry run over disjoint partitions in N processes: parallel.py)
    tidings-replay --shadow  [range ...] [--templates DIR] [--tenants DIR]
    tidings-replay --simulate --until T|+30d [--step 1h] [range ...]
    tidings-replay --file records.jsonl ...      (a file of exported records instead of Kafka)

Reads; never writes. Nothing is produced to any topic, no consumer group is joined and no offset
is committed (``streams/replay/kafka.py``), SES is never called. Tenants, the suppression list and
customer statuses are read from their compacted topics as the worker reads them at start, unless
``--tenants DIR`` replaces the tenants (and ``--offline`` reads nothing from Kafka at all).
One JSON line per mail goes to ``--out`` (default: standard output), the summary to standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from streams.errors import ConfigurationError
from streams.replay.parallel import WorkerFailed
from streams.replay.records import ReplayRecord

log = logging.getLogger("streams.replay")

_SPAN = re.compile(r"^\+?(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
PROGRESS_EVERY_SECONDS = 0.5


def parse_span(text: str) -> dt.timedelta:
    """``30s``, ``15m``, ``1h``, ``1d``, ``2w``."""
    m = _SPAN.match(text.strip())
    if m is None:
        raise ConfigurationError(f"{text!r} is not a span such as 15m, 1h or 1d")
    return dt.timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def parse_until(text: str, last: dt.datetime) -> dt.datetime:
    """An ISO time, or ``+30d``: that long after the last record."""
    if text.startswith("+"):
        return last + parse_span(text)
    at = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.timezone.utc)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tidings-replay", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="what these records would send today (the default)")
    mode.add_argument("--shadow", action="store_true", help="compare with what the deployment sent for the same records")
    mode.add_argument("--simulate", action="store_true", help="event time: follow the records, then tick on to --until")
    src = p.add_argument_group("what to read")
    src.add_argument("--file", type=Path, help="a JSON Lines file of exported records instead of Kafka")
    src.add_argument("--topic", action="append", default=[], help="an inbound topic (full name or pack.aggregate); repeatable")
    src.add_argument("--from", dest="start", help="start: ISO time, or partition:offset[,...] (inclusive)")
    src.add_argument("--to", dest="end", help="end: ISO time, or partition:offset[,...] (exclusive)")
    src.add_argument("--limit", type=int, help="read at most this many records")
    src.add_argument("--export", type=Path, help="also write the records read to this file (replayable with --file)")
    sel = p.add_argument_group("what to report")
    sel.add_argument("--tenant", help="only this tenant's mails")
    sel.add_argument("--trigger", help="only this trigger's mails (pack/trigger)")
    sel.add_argument("--out", default="-", help="JSON Lines output file (default: standard output)")
    sel.add_argument("--html", type=Path, help="also write a gallery of every rendered mail into this folder")
    sel.add_argument("--show-recipients", action="store_true", help="show addresses (masked by default)")
    cfg = p.add_argument_group("configuration")
    cfg.add_argument("--templates", type=Path, help="templates folder in place of the deployed one")
    cfg.add_argument("--tenants", type=Path, help="tenants folder in place of the tenants topic")
    cfg.add_argument("--offline", action="store_true", help="read nothing from Kafka (needs --file and --tenants)")
    cfg.add_argument("--bootstrap", help="Kafka bootstrap servers (default: TIDINGS_KAFKA_BOOTSTRAP)")
    cfg.add_argument("--now", help="the dry run's now (ISO time; default: the time the run starts)")
    sim = p.add_argument_group("simulation")
    sim.add_argument("--until", help="simulate up to this time: ISO, or +30d after the last record")
    sim.add_argument("--step", default="1h", help="tick interval of the simulation (default 1h)")
    p.add_argument("--processes", type=int,
                   help="dry run in this many processes over disjoint partitions (default: the usable CPUs from Kafka, "
                        "1 from a --file; always 1 for --shadow, --simulate, --html, --export and --limit)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every dead letter as the worker would")
    return p


class Progress:
    """``read N of M, rate, time left`` on a terminal; nothing when standard error is not one."""

    def __init__(self, total: int | None, stream: IO[str] | None = None) -> None:
        self.total = total
        # Looked up when the run starts, not when this module was imported: a test runner (or an
        # embedding program) may have replaced sys.stderr in between, and closed the old one.
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.done = 0
        self.started = self._last = time.monotonic()

    def __call__(self) -> None:
        self.update(self.done + 1)

    def update(self, done: int) -> None:
        """``done`` records read so far (the sum of several processes' counts)."""
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        rate = self.done / max(now - self.started, 1e-9)
        of = f" of {self.total:,}" if self.total else ""
        left = f", {max(self.total - self.done, 0) / rate:,.0f} s left" if self.total and rate > 0 else ""
        self.stream.write(f"\rread {self.done:,}{of} records, {rate:,.0f}/s{left}   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write("\n")


def _settings(args: argparse.Namespace, scratch: Path) -> Any:
    from streams.settings import Settings

    settings = Settings()
    update: dict[str, Any] = {}
    if args.templates is not None:
        if not (args.templates / "_layouts").is_dir():
            raise ConfigurationError(f"{args.templates} is not a templates folder (it has no _layouts/)")
        # The tenant checks look for the schemas beside the templates folder (rendering/lint.py
        # check_override); a folder of links keeps them working for templates kept anywhere.
        (scratch / "templates").symlink_to(args.templates.resolve(), target_is_directory=True)
        (scratch / "schemas").symlink_to(Path(settings.schemas_dir).resolve(), target_is_directory=True)
        update["templates_dir"] = scratch / "templates"
    if args.bootstrap:
        update["kafka_bootstrap"] = args.bootstrap
    return settings.model_copy(update=update)


def _topics(args: argparse.Namespace, inbound: tuple[str, ...], prefix: str) -> list[str]:
    if not args.topic:
        return list(inbound)
    chosen = []
    for t in args.topic:
        name = t if t in inbound else f"{prefix}{t}"
        if name not in inbound:
            raise ConfigurationError(f"{t!r} is not an inbound topic; these are: {', '.join(inbound)}")
        chosen.append(name)
    return chosen


# Without --limit or --export the records pass as they are: a generator layer costs each record.
def _limited(records: Iterator[ReplayRecord], limit: int | None) -> Iterator[ReplayRecord]:
    return records if limit is None else _first(records, limit)


def _first(records: Iterator[ReplayRecord], limit: int) -> Iterator[ReplayRecord]:
    for n, record in enumerate(records):
        if n >= limit:
            return
        yield record


def _exported(records: Iterator[ReplayRecord], out: IO[str] | None) -> Iterator[ReplayRecord]:
    return records if out is None else _copied(records, out)


def _copied(records: Iterator[ReplayRecord], out: IO[str]) -> Iterator[ReplayRecord]:
    from streams.replay.records import dump_record

    for record in records:
        out.write(dump_record(record) + "\n")
        yield record


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # The dead letters are lines of the report; the worker's per-record warnings would repeat them.
        for name in ("streams.runtime.emit", "streams.runtime.guard", "streams.ingest.agents", "streams.codecs.partitioning"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return run(args)
    except ConfigurationError as e:
        print(f"tidings-replay: {e}", file=sys.stderr)
        return 2
    except WorkerFailed as e:
        print(f"tidings-replay: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    """The command, outside any event loop: a dry run in several processes forks, and a fork
    inside a running loop would leave the children a loop they cannot use."""
    if args.offline and (args.file is None or args.tenants is None):
        raise ConfigurationError("--offline needs --file and --tenants: there is no Kafka to read them from")
    if args.simulate and not args.until:
        raise ConfigurationError("--simulate needs --until (an ISO time, or +30d after the last record)")
    scratch = Path(tempfile.mkdtemp(prefix="tidings-replay-"))
    try:
        return _run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args: argparse.Namespace, scratch: Path) -> int:  # noqa: C901 - the command's steps, in order
    from streams.app import build_runtime
    from streams.domain.tenants import TenantDirectory
    from streams.replay import kafka, shadow
    from streams.replay.records import read_file
    from streams.replay.report import DeliveryDecisions, Gallery, JsonLines, MailLine, Summary
    from streams.replay.run import Replay, Unreachable, VirtualClock

    settings = _settings(args, scratch)
    started = dt.datetime.now(dt.timezone.utc)
    clock = VirtualClock(_iso(args.now) if args.now else started)
    rt = build_runtime(settings, sender=Unreachable(), attachments=Unreachable(), clock=clock)

    # Configuration, as the worker reads it before its agents start (streams/app.py before_agents).
    if args.tenants is not None:
        for tenant in TenantDirectory.load(args.tenants):
            rt.tenants.put(tenant)
    feeds = [] if args.offline else [*([rt.tenant_feed] if args.tenants is None else []), rt.suppression_feed, *rt.customer_feeds]
    for feed in feeds:
        feed.start()
    try:
        for feed in feeds:
            feed.wait_caught_up(settings.tenants_catch_up_seconds)
    finally:
        for feed in feeds:
            feed.stop()

    topics = _topics(args, rt.topics.inbound, rt.topics.prefix)
    spans: list[kafka.Span] = []
    if args.file is not None:
        from streams.replay.records import count_partitions

        sizes = count_partitions(args.file)
    else:
        spans = kafka.plan_range(settings.kafka_bootstrap, topics, kafka.Bound.parse(args.start), kafka.Bound.parse(args.end))
        sizes = {}
        for span in spans:
            sizes[span.partition] = sizes.get(span.partition, 0) + span.size
    total: int | None = sum(sizes.values())
    processes = _processes(args, len(sizes))
    if processes > 1:
        return _dry_run_in_processes(args, rt, clock, topics, spans, sizes, processes, scratch, started)
    if args.file is not None:
        records: Iterator[ReplayRecord] = read_file(args.file)
        if args.topic:
            records = (r for r in records if r.topic in topics)
    else:
        records = kafka.read_planned(settings.kafka_bootstrap, spans, time_order=args.simulate)
    if args.limit is not None and total is not None:
        total = min(total, args.limit)

    summary = Summary()
    # Closed however the run ends: a record file that fails half-way (exit 2) leaves no open --out.
    with contextlib.ExitStack() as files:
        out = sys.stdout if args.out == "-" else files.enter_context(open(args.out, "w", encoding="utf-8"))
        export = files.enter_context(open(args.export, "w", encoding="utf-8")) if args.export else None
        gallery = Gallery(args.html) if args.html else None
        lines = JsonLines(out)
        replayed: dict[str, shadow.Mail] = {}
        seen: dict[str, float] = {}  # the first and last record timestamps, epoch seconds (``_instant`` when used)

        def keep(tenant: str | None, trigger: str | None) -> bool:
            return (args.tenant is None or tenant == args.tenant) and (args.trigger is None or trigger == args.trigger)

        def emit(line: MailLine) -> None:
            if not keep(line.tenant, line.trigger):
                return
            summary.add(line)
            if args.shadow:
                # Every mail the worker would render (the deployment's outbound topic has them all, the
                # ones its sender then skipped or suppressed too).
                if line.text is not None and line.message_id is not None:
                    replayed[line.message_id] = shadow.Mail(line.message_id, line.tenant or "", line.trigger or "",
                                                           line.subject or "", line.text or "", line.html or "")
                return
            lines.add(line)
            if gallery is not None:
                gallery.add(line)

        def timestamps(rs: Iterator[ReplayRecord]) -> Iterator[ReplayRecord]:
            for r in rs:
                ts = r.timestamp
                if not seen:
                    seen["first"] = seen["last"] = ts
                elif ts < seen["first"]:
                    seen["first"] = ts
                elif ts > seen["last"]:
                    seen["last"] = ts
                if args.shadow:
                    clock.at = _instant(ts)  # rendered as of when the worker processed it, near enough: its event time
                yield r

        replay = Replay(rt, clock, DeliveryDecisions(rt.suppressions, settings.unknown_outcome), emit,
                        show_recipients=args.show_recipients, keep_bodies=bool(args.html or args.shadow))
        progress = Progress(total)
        step = parse_span(args.step) if args.simulate else None

        async def replay_all() -> None:
            await replay.feed_all(timestamps(_exported(_limited(records, args.limit), export)), step=step, on_record=progress)
            if args.simulate and step is not None:
                last = _instant(seen["last"]) if seen else clock.at
                await replay.advance(parse_until(args.until, last), step)

        try:
            asyncio.run(replay_all())
        finally:
            progress.close()
        elapsed = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()

        err = sys.stderr
        if args.shadow:
            deployed = shadow.Deployed()
            if seen and not args.offline:
                deployed = _read_deployed(settings.kafka_bootstrap, rt, set(topics), _instant(seen["first"]),
                                          _instant(seen["last"]), keep)
            differences = shadow.compare(replayed, deployed)
            for d in differences:
                out.write(d.json() + "\n")
            print(shadow.summary(differences, len(replayed), len(deployed.mails)), file=err)
            for d in differences:
                if d.diff:
                    print(d.diff, file=err)
        else:
            print(summary.table(), file=err)
            if args.simulate:
                print("\nmails per day and trigger (simulated):", file=err)
                print(summary.days(), file=err)
        if gallery is not None:
            print(f"gallery: {gallery.close(clock.at)}", file=err)
        print(f"{replay.records:,} records in {elapsed:.1f} s; {replay.tables.entities():,} entities in state; nothing was written",
              file=err)
        return 0


def _processes(args: argparse.Namespace, partitions: int) -> int:
    """How many processes the dry run gets: never more than partition numbers with records."""
    from streams.replay.parallel import usable_cpus

    one_place = {"--shadow": args.shadow, "--simulate": args.simulate, "--html": args.html is not None,
                 "--export": args.export is not None, "--limit": args.limit is not None}
    if args.processes is not None:
        if args.processes < 1:
            raise ConfigurationError(f"--processes {args.processes}: at least 1")
        named = [flag for flag, on in one_place.items() if on]
        if args.processes > 1 and named:
            raise ConfigurationError(f"--processes {args.processes} is for dry runs; {', '.join(named)} needs every "
                                     "partition in one process")
        wanted = args.processes
    elif any(one_place.values()) or args.file is not None:
        wanted = 1  # a file is usually small; --processes N splits it too
    else:
        wanted = usable_cpus()
    return max(1, min(wanted, partitions))


def _dry_run_in_processes(args: argparse.Namespace, rt: Any, clock: Any, topics: list[str], spans: list[Any],
                          sizes: dict[int, int], processes: int, scratch: Path, started: dt.datetime) -> int:
    """The dry run split over ``processes`` processes by partition number (``parallel.py``)."""
    from streams.replay import parallel
    from streams.replay.report import DeliveryDecisions, MailLine
    from streams.replay.run import Replay

    shards = parallel.shards_of(parallel.assign(sizes, processes), spans)

    def make_replay(emit: Any) -> Replay:
        return Replay(rt, clock, DeliveryDecisions(rt.suppressions, rt.settings.unknown_outcome), emit,
                      show_recipients=args.show_recipients)

    def keep(line: MailLine) -> bool:
        return (args.tenant is None or line.tenant == args.tenant) and (args.trigger is None or line.trigger == args.trigger)

    progress = Progress(sum(sizes.values()))
    try:
        results = parallel.run_shards(shards, scratch, make_replay, keep, file=args.file,
                                      topics=set(topics) if args.topic else None,
                                      bootstrap=rt.settings.kafka_bootstrap, progress=progress.update)
    finally:
        progress.close()
    if args.out == "-":
        sys.stdout.flush()
        summary = parallel.merge(results, scratch, shards, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        with open(args.out, "wb") as out:
            summary = parallel.merge(results, scratch, shards, out)
    elapsed = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    print(summary.table(), file=sys.stderr)
    records, entities = sum(r.records for r in results), sum(r.entities for r in results)
    print(f"{records:,} records in {elapsed:.1f} s in {len(shards)} processes; {entities:,} entities in state; "
          "nothing was written", file=sys.stderr)
    return 0


def _read_deployed(bootstrap: str, rt: Any, topics: set[str], first: dt.datetime, last: dt.datetime, keep: Any) -> Any:
    """The deployment's outbound records and delivery statuses since the first replayed record."""
    from streams.replay import kafka, shadow

    start = kafka.Bound(at=first - dt.timedelta(minutes=5))  # a mail is produced after its event; a little slack for clock skew

    def decoded(topic_names: list[str]) -> Iterator[dict[str, Any]]:
        _, records = kafka.read_range(bootstrap, topic_names, start, kafka.Bound())
        for r in records:
            with contextlib.suppress(Exception):  # a record the replay cannot read is not the deployment's mail
                yield rt.codec.decode(r.value).record

    outbound = list(decoded([rt.topics.outbound, rt.topics.outbound_priority]))
    return shadow.collect_deployed(outbound, decoded([rt.topics.delivery_status]), topics=topics, first=first, last=last, keep=keep)


def _instant(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)


def _iso(text: str) -> dt.datetime:
    at = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.timezone.utc)
