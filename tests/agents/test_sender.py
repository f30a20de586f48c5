"""The sender's handler on the in-memory runtime: duplicates, the hold, unknown outcomes, permits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.delivery.agents import Sender
from streams.delivery.ledger import sending_entry
from streams.delivery.outbox import DELIVERY_STATUS, OUTBOUND
from streams.delivery.pacing import BUCKET_BOUND
from streams.domain.samples import sample_event
from streams.errors import OutcomeUnknown, SendingBlocked
from streams.runtime.commits import CommitWatch
from streams.runtime.guard import Outcome
from streams.settings import Settings
from streams.suppression.model import SuppressionList
from tests.agents.conftest import NOW, TOPICS, FixedClock, MemoryTables, Record, Runtime

BOOKING = "tidings.storage.BookingCreated"


class ScriptedSes:
    """Answers each request with the next scripted error, then with success."""

    wire = BUCKET_BOUND

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.sent: list[str] = []
        self.calls = 0

    async def send(self, **kwargs: Any) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(kwargs["to_address"])
        return f"ses-{len(self.sent)}"


class _NoAttachments:
    async def fetch(self, uri: str) -> bytes:
        raise AssertionError("no attachment expected")


@pytest.fixture
def mails(codec: Any, catalog: Any, pipeline: Any, metrics: Any) -> list[Record]:
    """Five outbound records of five bookings, as the ingest handler emits them."""
    from streams.ingest.agents import IngestHandler
    from streams.triggers.engine import TimedEngine

    out = []
    for n in range(5):
        event = sample_event(catalog.samples, BOOKING, "boxit-london", now=NOW)
        event["booking_id"] = f"BK-S{n}"
        event["customer"]["email"] = f"c{n}@example.org"
        rt = Runtime("ingest")
        engine = TimedEngine(catalog, pipeline.tenants, pipeline.renderer, metrics)
        handler = IngestHandler(pipeline, engine, MemoryTables(catalog), FixedClock(), metrics, 4)
        rt.run(handler, Record(topic="t.storage.bookings", value=codec.encode(BOOKING, event)))
        (mail,) = rt.writer.on(TOPICS[OUTBOUND])
        out.append(Record(topic=TOPICS[OUTBOUND], value=mail.value, key=mail.key, offset=n))
    return out


def _sender(codec: Any, metrics: Any, client: Any, ledger: dict[str, Any] | None = None, **settings: Any) -> Sender:
    return Sender(
        settings=Settings(**settings),
        decode=codec.decode,
        encode=codec.encode,
        client=client,
        attachments=_NoAttachments(),
        ledger=ledger if ledger is not None else {},
        suppressions=SuppressionList(),
        watch=CommitWatch(),
        metrics=metrics,
        clock=FixedClock(),
    )


def _statuses(rt: Runtime, codec: Any) -> list[str]:
    return [codec.decode(p.value).record["status"] for p in rt.writer.on(TOPICS[DELIVERY_STATUS])]


def test_a_mail_is_sent_once_and_its_duplicate_skipped(codec: Any, metrics: Any, mails: list[Record]) -> None:
    ses = ScriptedSes()
    sender, rt = _sender(codec, metrics, ses), Runtime("deliver")
    assert rt.run(sender.outbound, mails[0]) is Outcome.COMMITTED
    assert rt.run(sender.outbound, mails[0]) is Outcome.COMMITTED  # a replayed record
    assert ses.sent == ["c0@example.org"]
    assert _statuses(rt, codec) == ["SENT"]  # the duplicate reports nothing new in the same run


def test_a_blocked_account_holds_every_actor_until_a_probe_succeeds(codec: Any, metrics: Any, mails: list[Record]) -> None:
    ses = ScriptedSes(SendingBlocked("SendingPausedException: paused"), SendingBlocked("SendingPausedException: paused"))
    sender, rt = _sender(codec, metrics, ses), Runtime("deliver")

    async def run_all() -> list[Outcome]:
        return list(await asyncio.gather(*(rt.guard(m, sender.outbound, m) for m in mails)))

    outcomes = asyncio.run(run_all())
    assert outcomes == [Outcome.COMMITTED] * len(mails)
    assert sorted(ses.sent) == sorted(f"c{n}@example.org" for n in range(5))
    # Only the actor that met the block probed while it held: two refusals, then five sends.
    assert ses.calls == len(mails) + 2
    assert metrics.sender_blocked.labels("paused")._value.get() == 0  # lifted by the first success


def test_an_unknown_outcome_is_dead_lettered_under_that_policy(codec: Any, metrics: Any, mails: list[Record]) -> None:
    ses = ScriptedSes(OutcomeUnknown("read timeout"))
    sender, rt = _sender(codec, metrics, ses, unknown_outcome="dead_letter"), Runtime("deliver")
    assert rt.run(sender.outbound, mails[0]) is Outcome.DEAD_LETTERED
    assert [h["tidings.reason"] for h in rt.dead_letters()] == ["outcome_unknown"]
    assert _statuses(rt, codec) == ["FAILED"] and ses.sent == []


def test_a_crash_between_request_and_outcome_resends_once_under_the_default_policy(codec: Any, metrics: Any, mails: list[Record]) -> None:
    message_id = codec.decode(mails[0].value).record["message_id"]
    ledger = {message_id: sending_entry(1, NOW)}  # left by a worker that died mid-request
    ses = ScriptedSes()
    rt = Runtime("deliver")
    assert rt.run(_sender(codec, metrics, ses, ledger).outbound, mails[0]) is Outcome.COMMITTED
    assert ses.sent == ["c0@example.org"] and ledger[message_id]["state"] == "sent"


def test_requests_without_a_committed_outcome_are_bounded_by_the_permits(codec: Any, metrics: Any, mails: list[Record]) -> None:
    # sender_max_uncommitted=4: one permit for the high lane, three for the others.
    ses = ScriptedSes()
    sender, rt = _sender(codec, metrics, ses, sender_max_uncommitted=4), Runtime("deliver")

    async def run() -> tuple[int, int]:
        tasks = [asyncio.ensure_future(rt.guard(m, sender.outbound, m)) for m in mails]
        await asyncio.sleep(0.5)
        before = len(ses.sent)  # no commit yet: the permits are not back
        sender.watch.committed({0}, sender.watch.snapshot())
        await asyncio.gather(*tasks)
        return before, len(ses.sent)

    before, after = asyncio.run(run())
    assert before == 3 and after == 5
