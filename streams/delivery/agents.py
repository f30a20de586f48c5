"""Faust wiring of the sender: drain both outbound topics into SES, once per message id, at the quota.

Two agents, one per lane topic (``outbound-priority`` for ``high`` mails, ``outbound`` for the
rest), each with ``TIDINGS_SENDER_CONCURRENCY`` actors, share one ``Pacer``
(``streams/delivery/pacing.py``): at most that many SES requests in flight, admitted at the
worker's share of the account's send rate, ``high`` first, then ``normal``, then ``bulk``.

For every record, the ledger (a table keyed by message id, co-partitioned with both topics) decides
(``streams/delivery/policy.py``): skip a duplicate, send, or handle an unknown outcome. Around each
request the ledger holds ``sending``, then the outcome: ``sent`` (with the SES id), ``failed``
(dead-lettered with its reason), or ``retrying`` when SES surely did not take it:

- throttled (429), unavailable (5xx), unreachable: back off (capped exponential) and retry;
- account paused or suspended, identity not verified: every actor holds (``tidings_sender_blocked``
  is 1, alert on it) and probes again with backoff; the backlog waits, nothing is dead-lettered;
- no answer (timeout, connection dropped): unknown outcome, by the configured policy;
- rejected (MessageRejected, bad address), attachment missing or too large: dead-lettered.

A recipient on the tenant's suppression list (``streams/suppression/``) is not sent to: the
ledger records ``suppressed`` (final) and the status topic SUPPRESSED.

Each state change is also a record on the delivery-status topic (``streams/delivery/status.py``),
written in the same transaction as the ledger entry it reports. After a crash, a record read again
whose outcome the local ledger holds from the earlier run is reported again (its first report
may have been aborted with the transaction): consumers of the status topic may see a state twice
and should keep the latest per message id.

Records of one id handled at once by two actors (a duplicate record in the same batch) would both
find no ledger entry; the second waits for the first's outcome instead (``in_flight``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

from streams.commits import CommitWatch
from streams.delivery.ledger import (
    carries_redrive, failed_entry, from_earlier_run, retrying_entry, sending_entry, sent_entry, suppressed_entry,
)
from streams.delivery.mime import build_mime
from streams.delivery.outbox import RAW, Outbox
from streams.delivery.pacing import Pacer, TokenBucket, ses_shape
from streams.delivery.policy import Action, attempts, decide, unknown_after_timeout
from streams.delivery.status import FAILED, SENT, SUPPRESSED
from streams.errors import OutcomeUnknown, PermanentDelivery, RejectedInput, RetryableDelivery, SendingBlocked
from streams.ingest.deadletter import send_dead_letter
from streams.ingest.pipeline import Rejection
from streams.rendering.render import CONFIGURATION_SET_HEADER, ses_tags
from streams.state.tables import ledger_table

if TYPE_CHECKING:
    import faust

    from streams.app import Runtime

log = logging.getLogger(__name__)

RETRY_FIRST_DELAY_SECONDS = 0.2
RETRY_MAX_DELAY_SECONDS = 30.0  # long enough to ride out throttling, short enough to resume promptly
# A granted send leaves this long after its grant, not at once (SesSender holds it until then):
# time for a worker thread and botocore to get it ready, so requests reach SES spaced as granted.
SEND_LEAD_SECONDS = 0.025


def register(app: faust.App, rt: Runtime) -> None:
    settings, codec, sender, store, m, clock = rt.settings, rt.codec, rt.sender, rt.attachments, rt.metrics, rt.clock
    priority_topic = app.topic(rt.topics.outbound_priority, **RAW)
    outbound_topic = app.topic(rt.topics.outbound, **RAW)
    dead_letter = app.topic(rt.topics.dead_letter, **RAW)
    outbox = Outbox(app, rt)
    ledger = ledger_table(app, settings)
    bucket = TokenBucket.for_quota(settings.ses_max_send_rate)
    pacer = Pacer(bucket, concurrency=settings.sender_concurrency)
    in_flight: dict[str, asyncio.Event] = {}
    # What a crash can send twice: a permit is taken before each request and given back once the
    # commit carrying its outcome is done (streams/commits.py). See streams/delivery/policy.py.
    # A quarter is kept for the high lane, so a password reset never waits for a permit that a
    # backlog of reminders holds.
    high_share = max(1, settings.sender_max_uncommitted // 4)
    permits = {
        "high": asyncio.Semaphore(high_share),
        "rest": asyncio.Semaphore(max(1, settings.sender_max_uncommitted - high_share)),
    }
    watch: CommitWatch = app.commits
    m.sender_uncommitted_limit.set(settings.sender_max_uncommitted)
    hold = _Hold(m)
    m.send_rate_limit.set(bucket.rate)

    async def on_assignment(sender: Any, tps: Any, **kwargs: Any) -> None:
        # The account's quota is shared by all workers; each takes its partitions' share of it.
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == rt.topics.outbound}
        share = max(len(owned), 1) / settings.partitions
        bucket.set_rate(*ses_shape(settings.ses_max_send_rate * share))
        m.send_rate_limit.set(bucket.rate)

    app.on_partitions_assigned.connect(on_assignment)

    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        watch.release_all()

    app.on_partitions_revoked.connect(on_revoked)

    async def commit_waiting() -> None:
        stale = watch.waiting_longer_than(settings.commit_interval_seconds)
        if stale:
            upto = watch.snapshot()
            done = await app.consumer.commit_transactions_of(stale, rt.topics.outbound)
            log.debug("committed the transactions of partitions %s, whose outcomes waited (%s)", done, stale)
            watch.committed(done, upto)

    app.timer(settings.commit_interval_seconds, name="tidings.commit_waiting_outcomes")(commit_waiting)

    async def release_when_committed(permit: asyncio.Semaphore, partition: int, seq: int) -> None:
        try:
            await watch.wait(partition, seq)
        finally:
            permit.release()

    async def prepare(mail: dict[str, Any]) -> bytes:
        """The raw message, built before the mail's turn at the pacer, not after: between the
        grant and the request's arrival at SES should be as little as possible (see pacing.py)."""
        files = [(a, await store.fetch(a["uri"])) for a in mail.get("attachments", ())]
        # Almost a millisecond of CPU (streams/delivery/mime.py): off the event loop that also runs ingest.
        return await asyncio.to_thread(build_mime, mail, files)

    async def request(mail: dict[str, Any], raw: bytes) -> str:
        return await sender.send(
            not_before=time.monotonic() + SEND_LEAD_SECONDS,
            gap=1.0 / bucket.rate,
            from_address=mail["from_address"],
            to_address=mail["to_address"],
            raw=raw,
            tags=mail.get("tags") or ses_tags(mail["tenant_id"], mail["pack"], mail["trigger"]),
            configuration_set=mail.get("headers", {}).get(CONFIGURATION_SET_HEADER),
        )

    async def handle(event: Any, lane_of: Any) -> None:
        msg = event.message
        try:
            mail = codec.decode(event.value).record
        except RejectedInput as e:
            await _dead_letter(Rejection("deliver", e.reason, e.detail), msg)
            return
        message_id = mail["message_id"]
        while (other := in_flight.get(message_id)) is not None:
            await other.wait()
        done = in_flight[message_id] = asyncio.Event()
        try:
            await _handle(mail, msg, lane_of(mail), redrive=carries_redrive(msg.headers))
        finally:
            del in_flight[message_id]
            done.set()

    async def _handle(mail: dict[str, Any], msg: Any, lane: str, *, redrive: bool) -> None:
        message_id, tenant, trigger = mail["message_id"], mail["tenant_id"], f"{mail['pack']}/{mail['trigger']}"
        entry = ledger.get(message_id)
        action = decide(entry, redrive=redrive, policy=settings.unknown_outcome)
        if action is Action.SKIP_DUPLICATE:
            m.duplicates_skipped.labels(tenant, trigger).inc()
            if entry is not None and from_earlier_run(entry):
                # Its record is read again, so its offset was not committed: the status written
                # with this outcome may have been aborted with it. Report it once more.
                await _report(mail, entry, msg)
            return
        if action is not Action.SEND:
            m.unknown_outcomes.labels("crash", settings.unknown_outcome).inc()
            log.warning("%s: an earlier attempt (%s) has no recorded outcome; policy %s", message_id, entry, action.value)
            if action is Action.DEAD_LETTER_UNKNOWN:
                await _fail(mail, msg, "outcome_unknown", "the worker stopped between the request and its answer")
                return
        # Suppression (streams/suppression/): a bounced, complaining or unsubscribed recipient.
        if (s := rt.suppressions.lookup(tenant, mail["to_address"], mail.get("transactional", True))) is not None:
            now = clock.now()
            ledger[message_id] = suppressed_entry(s.reason, now)
            await outbox.status(mail, SUPPRESSED, now, msg.partition, reason=s.reason)
            m.mails_suppressed.labels(tenant, s.reason).inc()
            return
        tried = attempts(entry)
        delay = RETRY_FIRST_DELAY_SECONDS
        queued, probing = True, False
        raw: bytes | None = None

        async def back_off(error: Exception | None, what: str) -> None:
            nonlocal delay
            m.send_retries.labels(_reason(error)).inc()
            log.warning("%s not %s (%s); retrying in %.1fs", message_id, what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_SECONDS)

        while True:
            if not probing:  # while sending is blocked, only the actors that met the block probe SES
                await hold.wait()
            if raw is None:
                try:
                    raw = await prepare(mail)
                except PermanentDelivery as e:  # an attachment missing or too large, a malformed header
                    await _fail(mail, msg, str(e).split(":")[0], str(e))
                    return
                except RetryableDelivery as e:  # the attachment store did not answer: nothing was sent
                    await back_off(e, "prepared")
                    continue
            permit = permits["high" if lane == "high" else "rest"]
            await permit.acquire()
            try:
                async with pacer.slot(lane):
                    if queued:
                        m.send_queue_seconds.labels(lane).observe(max(0.0, (clock.now() - mail["created_at"]).total_seconds()))
                        queued = False
                    tried += 1
                    ledger[message_id] = sending_entry(tried, clock.now())
                    m.sends_in_flight.inc()
                    try:
                        provider_id = await request(mail, raw)
                    except (RetryableDelivery, OutcomeUnknown, PermanentDelivery) as e:
                        error: Exception | None = e
                    except Exception as e:
                        log.exception("sending %s failed unexpectedly", message_id)
                        error = e
                    else:
                        error = None
                    finally:
                        m.sends_in_flight.dec()
                done = await _record_outcome(mail, msg, error, provider_id if error is None else "", tried)
            except BaseException:
                permit.release()  # stopping mid-request: nothing left to wait for
                raise
            # The outcome is in the ledger; the permit comes back when it is committed.
            asyncio.ensure_future(release_when_committed(permit, msg.partition, watch.written()))
            if done:
                return
            probing = isinstance(error, SendingBlocked)
            await back_off(error, "sent")

    async def _record_outcome(mail: dict[str, Any], msg: Any, error: Exception | None, provider_id: str, tried: int) -> bool:
        """Write what one request did into the ledger (and status, dead letters); True if the mail is done."""
        message_id, tenant, trigger = mail["message_id"], mail["tenant_id"], f"{mail['pack']}/{mail['trigger']}"
        if error is None:
            hold.clear()
            now = clock.now()
            ledger[message_id] = sent_entry(provider_id, now)
            await outbox.status(mail, SENT, now, msg.partition, provider_id=provider_id)
            m.emails_sent.labels(tenant, trigger).inc()
            m.event_to_sent_seconds.labels(trigger).observe(max(0.0, (now - mail["source_timestamp"]).total_seconds()))
            return True
        if isinstance(error, PermanentDelivery):
            # Only the provider's answers get here; our own findings (attachment_missing,
            # malformed_mail) fail the mail in prepare(), before its turn.
            await _fail(mail, msg, "rejected_by_provider", str(error))
            return True
        if isinstance(error, OutcomeUnknown):
            m.unknown_outcomes.labels("no_answer", settings.unknown_outcome).inc()
            log.warning("%s: no answer from the provider (%s); policy %s", message_id, error, settings.unknown_outcome)
            if unknown_after_timeout(settings.unknown_outcome) is Action.DEAD_LETTER_UNKNOWN:
                await _fail(mail, msg, "outcome_unknown", str(error))
                return True
        elif not isinstance(error, RetryableDelivery):
            await _fail(mail, msg, "internal_error", "see worker log")
            return True
        if isinstance(error, SendingBlocked):
            hold.block(_reason(error))
        ledger[message_id] = retrying_entry(tried, _reason(error), clock.now())
        return False

    async def _report(mail: dict[str, Any], entry: dict[str, Any], msg: Any) -> None:
        at = dt.datetime.fromisoformat(entry["at"])
        state = entry["state"]
        if state == "sent":
            await outbox.status(mail, SENT, at, msg.partition, provider_id=entry["provider_id"])
        elif state == "failed":
            await outbox.status(mail, FAILED, at, msg.partition, reason=entry["reason"])
        else:
            await outbox.status(mail, state.upper(), at, msg.partition, reason=entry.get("reason"))

    async def _fail(mail: dict[str, Any], msg: Any, reason: str, detail: str) -> None:
        now = clock.now()
        ledger[mail["message_id"]] = failed_entry(reason, now)
        await _dead_letter(Rejection("deliver", reason, detail, mail["message_id"]), msg)
        await outbox.status(mail, FAILED, now, msg.partition, reason=reason)

    async def _dead_letter(rejection: Rejection, msg: Any) -> None:
        await send_dead_letter(dead_letter, msg, rejection, m)

    async def send_priority(stream: Any) -> None:
        async for event in stream.events():
            await handle(event, lambda mail: "high")

    async def send_outbound(stream: Any) -> None:
        async for event in stream.events():
            await handle(event, lambda mail: "bulk" if mail.get("priority") == "bulk" else "normal")

    concurrency = settings.sender_concurrency
    app.agent(priority_topic, name="tidings.deliver_priority", concurrency=concurrency)(send_priority)
    app.agent(outbound_topic, name="tidings.deliver", concurrency=concurrency)(send_outbound)

    # Faust writes a topic inside the exactly-once transaction only when some agent subscribes to
    # it (see streams/ingest/agents.py); reading the statuses back also gives per-state totals.
    async def audit_delivery_status(stream: Any) -> None:
        async for event in stream.events():
            try:
                status = codec.decode(event.value).record["status"]
            except Exception:  # written by Tidings itself; a foreign record is counted, not fatal
                status = "undecodable"
            m.delivery_status_records.labels(str(status)).inc()

    app.agent(app.topic(rt.topics.delivery_status, **RAW), name="tidings.delivery_status_audit")(audit_delivery_status)


def _reason(error: Exception | None) -> str:
    return str(error).split(":")[-1] or type(error).__name__


class _Hold:
    """Sending stopped by the provider for everyone (account paused, identity not verified).

    While blocked, actors wait here instead of each probing SES; the actors that met the block
    probe again after their backoff, and the first success lifts it.
    """

    def __init__(self, metrics: Any) -> None:
        self._m = metrics
        self._open = asyncio.Event()
        self._open.set()
        self._reason: str | None = None

    def block(self, reason: str) -> None:
        if self._reason is None:
            log.error("the provider refuses to send (%s): holding the backlog until it accepts again", reason)
        self._reason = reason
        self._m.sender_blocked.labels(reason).set(1)
        self._open.clear()

    def clear(self) -> None:
        if self._reason is not None:
            log.warning("the provider accepts mail again after %s", self._reason)
            self._m.sender_blocked.labels(self._reason).set(0)
            self._reason = None
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()
