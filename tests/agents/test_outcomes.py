"""For every agent, a fault at each step of its handler still ends the record in one outcome.

Each handler runs once cleanly, counting the calls it makes to its collaborators (its steps);
then once per step with that call raising. A bug (``RuntimeError``) must dead-letter the record
with ``internal_error`` and the exception's type, never its message, and nothing of the failed
handler's other outputs; a failing dependency (``OSError``: the disk, the network) must hold the
record unacknowledged and stop the worker, with nothing written. Nothing else is allowed: no
record ever ends acknowledged without its outputs or its dead letter.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from streams.delivery.agents import Sender
from streams.delivery.outbox import OUTBOUND
from streams.delivery.sender import RecordingSender
from streams.domain.samples import sample_event
from streams.ingest.agents import IngestHandler
from streams.runtime.commits import CommitWatch
from streams.runtime.guard import Outcome
from streams.settings import Settings
from streams.suppression.agents import FeedbackHandler
from streams.suppression.model import SuppressionList
from streams.triggers.agents import FiringsHandler, TickHandler, tick_value
from streams.triggers.engine import TimedEngine
from tests.agents.conftest import NOW, TOPICS, Faults, FixedClock, MemoryTables, Record, Runtime

SECRET = "jürgen.secret@example.org"  # in the injected error's message: must reach no dead letter
TENANT = "lagerhaus-nord"
BOOKING = "tidings.storage.BookingCreated"


def _booking(codec: Any, catalog: Any) -> Record:
    event = sample_event(catalog.samples, BOOKING, TENANT, now=NOW)
    return Record(topic=f"t.{catalog.topic_suffix_for(BOOKING)}", value=codec.encode(BOOKING, event))


class Stage:
    """A handler built fresh for one run, with its collaborators wrapped by ``faults``."""

    def __init__(self, name: str, build: Callable[[Faults], tuple[Callable[..., Any], Record]]) -> None:
        self.name, self.build = name, build

    def run(self, faults: Faults) -> tuple[Runtime, Record, Outcome]:
        handler, record = self.build(faults)
        rt = Runtime(self.name)
        return rt, record, rt.run(handler, record)


@pytest.fixture
def stages(codec: Any, catalog: Any, tenants: Any, pipeline: Any, metrics: Any) -> dict[str, Stage]:
    def engine(faults: Faults | None = None) -> Any:
        real = TimedEngine(catalog, tenants, pipeline.renderer, metrics)
        return real if faults is None else faults.wrap(real, "engine")

    def ingest(faults: Faults) -> tuple[Callable[..., Any], Record]:
        handler = IngestHandler(
            faults.wrap(pipeline, "pipeline"), engine(faults), MemoryTables(catalog), faults.wrap(FixedClock(), "clock"), metrics, 4,
        )
        return handler, _booking(codec, catalog)

    def booked() -> tuple[Any, MemoryTables, Any]:
        """An engine and tables holding one booking's timers, and the due time of the first."""
        real, tables = engine(), MemoryTables(catalog)
        real.rebuild(0, [])  # the partition is assigned and its (empty) index ready
        event = sample_event(catalog.samples, BOOKING, TENANT, now=NOW)
        real.on_event(tables.states, tables.timers, 0, BOOKING, event, tenants.get(TENANT))
        due = real.index.earliest(0)
        assert due is not None, "the sample booking plans no timer"
        return real, tables, due

    def tick(faults: Faults) -> tuple[Callable[..., Any], Record]:
        real, tables, due = booked()
        sent: list[bytes] = []
        handler = TickHandler(
            faults.wrap(real, "engine"), faults.wrap(tables, "tables"), metrics,
            max_fires_per_tick=100, max_record_bytes=1_000_000,
            send_firings=faults.wrap(lambda p, value: sent.append(value), "send_firings"),
        )
        import datetime as dt
        return handler, Record(topic="t.ticks", value=tick_value(dt.datetime.fromtimestamp(due, dt.timezone.utc)))

    def firings_record() -> Record:
        real, tables, due = booked()
        sent: list[bytes] = []
        import datetime as dt
        handler = TickHandler(real, tables, metrics, max_fires_per_tick=100, max_record_bytes=1_000_000,
                              send_firings=lambda p, value: sent.append(value))
        rt = Runtime("tick")
        assert rt.run(handler, Record(topic="t.ticks", value=tick_value(dt.datetime.fromtimestamp(due, dt.timezone.utc)))) is Outcome.COMMITTED
        assert sent, "the tick fired nothing"
        return Record(topic="t.firings", value=sent[0])

    def render(faults: Faults) -> tuple[Callable[..., Any], Record]:
        record = firings_record()
        idle = asyncio.Event()
        idle.set()
        return FiringsHandler(engine(faults), faults.wrap(pipeline, "pipeline"), metrics, idle, FixedClock()), record

    def outbound_record() -> Record:
        rt = Runtime("ingest")
        handler = IngestHandler(pipeline, engine(), MemoryTables(catalog), FixedClock(), metrics, 4)
        assert rt.run(handler, _booking(codec, catalog)) is Outcome.COMMITTED
        mail = rt.writer.on(TOPICS[OUTBOUND])[0]
        return Record(topic=TOPICS[OUTBOUND], value=mail.value, key=mail.key)

    def deliver(faults: Faults) -> tuple[Callable[..., Any], Record]:
        sender = Sender(
            settings=Settings(),
            decode=faults.wrap(codec.decode, "decode"),
            encode=codec.encode,
            client=faults.wrap(RecordingSender(), "ses"),
            attachments=faults.wrap(_NoAttachments(), "attachments"),
            ledger=faults.wrap({}, "ledger"),
            suppressions=faults.wrap(SuppressionList(), "suppressions"),
            watch=CommitWatch(),
            metrics=metrics,
            clock=faults.wrap(FixedClock(), "clock"),
        )
        return sender.outbound, outbound_record()

    def feedback(faults: Faults) -> tuple[Callable[..., Any], Record]:
        handler = FeedbackHandler(
            ses_events_topic="t.ses-events",
            decode=faults.wrap(codec.decode, "decode"),
            tenants=faults.wrap(tenants, "tenants"),
            suppressions=faults.wrap(SuppressionList(), "suppressions"),
            writer=faults.wrap(_RecordingSuppressions(), "writer"),
            metrics=metrics,
            clock=faults.wrap(FixedClock(), "clock"),
        )
        value = codec.encode("tidings.feedback.Unsubscribed", {
            "envelope": {"event_id": str(uuid.uuid4()), "tenant_id": TENANT, "occurred_at": NOW, "producer": "test"},
            "email": "leaver@example.org",
            "source": "one_click",
        })
        return handler, Record(topic="t.unsubscribes", value=value)

    return {s.name: s for s in (
        Stage("ingest", ingest), Stage("tick", tick), Stage("render", render), Stage("deliver", deliver), Stage("feedback", feedback),
    )}


class _NoAttachments:
    async def fetch(self, uri: str) -> bytes:
        raise AssertionError("the sample mail has no attachment")


class _RecordingSuppressions:
    def __init__(self) -> None:
        self.written: list[Any] = []

    def suppress(self, entries: Any, timeout: float = 30.0) -> None:
        self.written.extend(entries)


@pytest.mark.parametrize("name", ["ingest", "tick", "render", "deliver", "feedback"])
def test_a_clean_run_commits_its_outputs(stages: dict[str, Stage], name: str) -> None:
    faults = Faults()
    rt, record, outcome = stages[name].run(faults)
    assert outcome is Outcome.COMMITTED
    assert rt.held == [] and record.refcount == 0
    assert faults.calls, f"{name} made no call to its collaborators: nothing to inject into"
    # A tick's firings go through the producer buffer and feedback's suppressions outside the
    # transaction (streams/topics.py), not through the record's outputs.
    if name not in ("tick", "feedback"):
        assert rt.writer.records, f"{name} wrote nothing"


@pytest.mark.parametrize("name", ["ingest", "tick", "render", "deliver", "feedback"])
def test_a_bug_at_any_step_dead_letters_the_record_with_internal_error(stages: dict[str, Stage], name: str) -> None:
    steps = len(_count(stages[name]))
    for step in range(1, steps + 1):
        faults = Faults()
        faults.target, faults.error = step, RuntimeError(f"broken near {SECRET}")
        rt, record, outcome = stages[name].run(faults)
        where = f"{name}, step {step} ({faults.calls[step - 1]})"
        assert rt.held == [] and record.refcount == 0, where
        letters = rt.dead_letters()
        internal = [h for h in letters if h["tidings.reason"] == "internal_error"]
        assert internal, f"{where}: no internal_error dead letter ({outcome}, {letters})"
        assert all("RuntimeError" in h["tidings.detail"] and SECRET not in h["tidings.detail"] for h in internal), where
        if outcome is Outcome.DEAD_LETTERED:
            # The failed handler's other outputs were dropped with it: only dead letters remain,
            # and the FAILED status of a mail the sender gave up on.
            assert {p.topic for _, p in rt.writer.records} <= {"t.dead-letter", "t.delivery-status"}, where
        else:  # one mail (a firing, a send) of the record failed; the rest of it went on
            assert outcome is Outcome.COMMITTED, where


@pytest.mark.parametrize("name", ["ingest", "tick", "render", "deliver", "feedback"])
def test_a_failing_dependency_at_any_step_holds_the_record_and_stops_the_worker(stages: dict[str, Stage], name: str) -> None:
    steps = _count(stages[name])
    for step in range(1, len(steps) + 1):
        faults = Faults()
        faults.target, faults.error = step, OSError(28, "No space left on device")
        rt, record, outcome = stages[name].run(faults)
        where = f"{name}, step {step} ({steps[step - 1]})"
        if name == "deliver" and steps[step - 1] == "ses.send":
            # A connection error from the SES client is an unknown outcome: retried (policy resend).
            assert outcome is Outcome.COMMITTED, where
            continue
        assert outcome is Outcome.HELD, where
        assert record.refcount == 1, f"{where}: the record would be acknowledged"
        assert rt.writer.records == [], f"{where}: something was written"
        assert len(rt.held) == 1 and isinstance(rt.held[0], OSError), where


@pytest.mark.parametrize("name", ["ingest", "render", "deliver"])
def test_a_refused_write_holds_the_record(stages: dict[str, Stage], name: str) -> None:
    handler, record = stages[name].build(Faults())
    rt = Runtime(name)
    from streams.errors import InfrastructureFailure
    rt.writer.fail_with = InfrastructureFailure("the producer refused a record")
    assert rt.run(handler, record) is Outcome.HELD
    assert record.refcount == 1 and rt.writer.records == [] and len(rt.held) == 1


def test_a_cancelled_handler_holds_its_record(stages: dict[str, Stage]) -> None:
    handler, record = stages["ingest"].build(Faults())

    async def stopped(ctx: Any) -> None:
        raise asyncio.CancelledError

    rt = Runtime("ingest")
    with pytest.raises(asyncio.CancelledError):
        rt.run(stopped, record)
    assert record.refcount == 1 and rt.writer.records == []


def _count(stage: Stage) -> list[str]:
    faults = Faults()
    _, _, outcome = stage.run(faults)
    assert outcome is Outcome.COMMITTED
    return list(faults.calls)
