"""The sender's handler: drain both outbound topics into SES, once per message id, at the quota.

Two agents, one per lane topic (``outbound-priority`` for ``high`` mails, ``outbound`` for the
rest), each with ``Settings.sender_in_flight`` actors (``TIDINGS_SENDER_CONCURRENCY``, by default a tenth
of a second of the quota), share one ``Pacer``
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

Each state change is also a record on the delivery-status topic (``streams/domain/status.py``),
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
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from streams.delivery.ledger import (
    carries_redrive,
    failed_entry,
    from_earlier_run,
    retrying_entry,
    sending_entry,
    sent_entry,
    suppressed_entry,
)
from streams.delivery.mime import build_mime
from streams.delivery.outbox import Outbox
from streams.delivery.pacing import Pacer, TokenBucket, WireGate, cap_for, ses_shape
from streams.delivery.policy import Action, attempts, decide, unknown_after_timeout
from streams.domain.status import FAILED, SENT, SUPPRESSED
from streams.errors import OutcomeUnknown, PermanentDelivery, RetryableDelivery, SendingBlocked
from streams.outcomes import Rejection
from streams.rendering.render import CONFIGURATION_SET_HEADER, ses_tags

if TYPE_CHECKING:
    from streams.clock import Clock
    from streams.delivery.attachments import AttachmentStore
    from streams.delivery.sender import EmailSender
    from streams.metrics import Metrics
    from streams.runtime.commits import CommitWatch
    from streams.runtime.emit import RecordContext
    from streams.settings import Settings
    from streams.suppression.model import SuppressionList

log = logging.getLogger(__name__)

RETRY_FIRST_DELAY_SECONDS = 0.2
RETRY_MAX_DELAY_SECONDS = 30.0  # long enough to ride out throttling, short enough to resume promptly
# A granted send leaves this long after its grant, not at once (the SES client holds it until then):
# time for a worker thread and botocore to get it ready, so requests reach SES spaced as granted.
SEND_LEAD_SECONDS = 0.025


class Sender:
    """The sender's per-record handler, for both lanes, with every collaborator injected.

    ``ledger`` is the ledger table's rows (message id -> entry); a write that fails raises
    ``InfrastructureFailure`` (the runtime's rows do that), which the guard answers by holding the
    record and stopping the worker. ``watch`` tells when a partition's ledger writes are
    committed (``streams/runtime/commits.py``). ``client`` is the SES client (or a twin).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        decode: Callable[[bytes | None], Any],
        encode: Callable[[str, dict[str, Any]], bytes],
        client: EmailSender,
        attachments: AttachmentStore,
        ledger: MutableMapping[str, Any],
        suppressions: SuppressionList,
        watch: CommitWatch,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.decode = decode
        self.client = client
        self.store = attachments
        self.ledger = ledger
        self.suppressions = suppressions
        self.watch = watch
        self.m = metrics
        self.clock = clock
        self.outbox = Outbox(encode, on_status=lambda s: metrics.delivery_status_records.labels(s).inc())
        self.bucket = TokenBucket.for_quota(settings.ses_max_send_rate, client.wire)
        self.gate = WireGate.for_quota(settings.ses_max_send_rate, client.wire)
        self.pacer = Pacer(self.bucket, concurrency=settings.sender_in_flight)
        self.in_flight: dict[str, asyncio.Event] = {}
        # What a crash can send twice: a permit is taken before each request and given back once
        # the commit carrying its outcome is done (streams/runtime/commits.py). See
        # streams/delivery/policy.py. A quarter is kept for the high lane, so a password reset
        # never waits for a permit that a backlog of reminders holds.
        high_share = max(1, settings.sender_max_uncommitted // 4)
        self.permits = {
            "high": asyncio.Semaphore(high_share),
            "rest": asyncio.Semaphore(max(1, settings.sender_max_uncommitted - high_share)),
        }
        self.hold = _Hold(metrics)
        metrics.sender_uncommitted_limit.set(settings.sender_max_uncommitted)
        metrics.send_rate_limit.set(self.bucket.rate)

    def share_quota(self, owned_partitions: int) -> None:
        """The account's quota is shared by all workers; each takes its partitions' share of it."""
        quota = self.settings.ses_max_send_rate * max(owned_partitions, 1) / self.settings.partitions
        self.bucket.set_rate(*ses_shape(quota, self.client.wire))
        self.gate.set_cap(cap_for(quota))
        self.m.send_rate_limit.set(self.bucket.rate)

    async def priority(self, ctx: RecordContext) -> None:
        await self.handle(ctx, lambda mail: "high")

    async def outbound(self, ctx: RecordContext) -> None:
        await self.handle(ctx, lambda mail: "bulk" if mail.get("priority") == "bulk" else "normal")

    async def _release_when_committed(self, permit: asyncio.Semaphore, partition: int, seq: int) -> None:
        try:
            await self.watch.wait(partition, seq)
        finally:
            permit.release()

    async def _prepare(self, mail: dict[str, Any]) -> bytes:
        """The raw message, built before the mail's turn at the pacer, not after: between the
        grant and the request's arrival at SES should be as little as possible (see pacing.py)."""
        files = [(a, await self.store.fetch(a["uri"])) for a in mail.get("attachments", ())]
        if not files:
            # Written directly, well under a tenth of a millisecond of CPU (streams/delivery/mime.py).
            # Handing it to a thread cost more than building it (wake-ups, the future, the GIL
            # passed back and forth: 0.3 ms of process CPU per mail, measured when it took 0.15 here).
            return build_mime(mail, files)
        # Attachments are base64-encoded whole, up to TIDINGS_MAX_ATTACHMENT_BYTES: off the event loop.
        return await asyncio.to_thread(build_mime, mail, files)

    async def _request(self, mail: dict[str, Any], raw: bytes) -> str:
        return await self.client.send(
            not_before=time.monotonic() + SEND_LEAD_SECONDS,
            gap=1.0 / self.bucket.rate,
            gate=self.gate,
            from_address=mail["from_address"],
            to_address=mail["to_address"],
            raw=raw,
            tags=mail.get("tags") or ses_tags(mail["tenant_id"], mail["pack"], mail["trigger"]),
            configuration_set=mail.get("headers", {}).get(CONFIGURATION_SET_HEADER),
        )

    async def handle(self, ctx: RecordContext, lane_of: Callable[[dict[str, Any]], str]) -> None:
        msg = ctx.source
        mail = self.decode(msg.value).record  # RejectedInput: the guard dead-letters it
        message_id = mail["message_id"]
        # Records of one id handled at once by two actors (a duplicate record in the same batch)
        # would both find no ledger entry; the second waits for the first's outcome instead.
        while (other := self.in_flight.get(message_id)) is not None:
            await other.wait()
        done = self.in_flight[message_id] = asyncio.Event()
        try:
            await self._handle(ctx, mail, lane_of(mail), redrive=carries_redrive(msg.headers))
        finally:
            del self.in_flight[message_id]
            done.set()

    async def _handle(self, ctx: RecordContext, mail: dict[str, Any], lane: str, *, redrive: bool) -> None:
        settings, m, clock, ledger = self.settings, self.m, self.clock, self.ledger
        message_id, tenant, trigger = mail["message_id"], mail["tenant_id"], f"{mail['pack']}/{mail['trigger']}"
        entry = ledger.get(message_id)
        action = decide(entry, redrive=redrive, policy=settings.unknown_outcome)
        if action is Action.SKIP_DUPLICATE:
            m.duplicates_skipped.labels(tenant, trigger).inc()
            if entry is not None and from_earlier_run(entry):
                # Its record is read again, so its offset was not committed: the status written
                # with this outcome may have been aborted with it. Report it once more.
                self._report(ctx, mail, entry)
            return
        if action is not Action.SEND:
            m.unknown_outcomes.labels("crash", settings.unknown_outcome).inc()
            log.warning("%s: an earlier attempt (%s) has no recorded outcome; policy %s", message_id, entry, action.value)
            if action is Action.DEAD_LETTER_UNKNOWN:
                self._fail(ctx, mail, "outcome_unknown", "the worker stopped between the request and its answer")
                return
        # Suppression (streams/suppression/): a bounced, complaining or unsubscribed recipient.
        if (s := self.suppressions.lookup(tenant, mail["to_address"], mail.get("transactional", True))) is not None:
            now = clock.now()
            ledger[message_id] = suppressed_entry(s.reason, now)
            self.outbox.status(ctx, mail, SUPPRESSED, now, reason=s.reason)
            m.mails_suppressed.labels(tenant, s.reason).inc()
            return
        tried = attempts(entry)
        delay = RETRY_FIRST_DELAY_SECONDS
        queued, probing = True, False
        raw: bytes | None = None

        async def back_off(error: Exception | None, what: str) -> None:
            nonlocal delay
            m.send_retries.labels(_reason(error)).inc()
            log.warning("%s not %s (%s); retrying in %.1fs", message_id, what, _reason(error), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_SECONDS)

        while True:
            if not probing:  # while sending is blocked, only the actors that met the block probe SES
                await self.hold.wait()
            if raw is None:
                try:
                    raw = await self._prepare(mail)
                except PermanentDelivery as e:  # an attachment missing or too large, a malformed header
                    self._fail(ctx, mail, str(e).split(":")[0], str(e))
                    return
                except RetryableDelivery as e:  # the attachment store did not answer: nothing was sent
                    await back_off(e, "prepared")
                    continue
            permit = self.permits["high" if lane == "high" else "rest"]
            await permit.acquire()
            try:
                async with self.pacer.slot(lane):
                    if queued:
                        m.send_queue_seconds.labels(lane).observe(max(0.0, (clock.now() - mail["created_at"]).total_seconds()))
                        queued = False
                    tried += 1
                    ledger[message_id] = sending_entry(tried, clock.now())
                    m.sends_in_flight.inc()
                    try:
                        provider_id = await self._request(mail, raw)
                    except (RetryableDelivery, OutcomeUnknown, PermanentDelivery) as e:
                        error: Exception | None = e
                    except OSError as e:
                        # The client let a connection error through: the request may have left.
                        error = OutcomeUnknown(f"{type(e).__name__} from the SES client")
                    except Exception as e:
                        log.error("sending %s failed unexpectedly: %s", message_id, type(e).__name__)
                        error = e
                    else:
                        error = None
                    finally:
                        m.sends_in_flight.dec()
                done = self._record_outcome(ctx, mail, error, provider_id if error is None else "", tried)
            except BaseException:
                permit.release()  # stopping mid-request, or the ledger failed: nothing left to wait for
                raise
            # The outcome is in the ledger; the permit comes back when it is committed.
            asyncio.ensure_future(self._release_when_committed(permit, ctx.partition, self.watch.written()))
            if done:
                return
            probing = isinstance(error, SendingBlocked)
            await back_off(error, "sent")

    def _record_outcome(self, ctx: RecordContext, mail: dict[str, Any], error: Exception | None, provider_id: str, tried: int) -> bool:
        """Write what one request did into the ledger (and status, dead letters); True if the mail is done."""
        settings, m, clock = self.settings, self.m, self.clock
        message_id, tenant, trigger = mail["message_id"], mail["tenant_id"], f"{mail['pack']}/{mail['trigger']}"
        if error is None:
            self.hold.clear()
            now = clock.now()
            self.ledger[message_id] = sent_entry(provider_id, now)
            self.outbox.status(ctx, mail, SENT, now, provider_id=provider_id)
            m.emails_sent.labels(tenant, trigger).inc()
            m.event_to_sent_seconds.labels(trigger).observe(max(0.0, (now - mail["source_timestamp"]).total_seconds()))
            return True
        if isinstance(error, PermanentDelivery):
            # Only the provider's answers get here; our own findings (attachment_missing,
            # malformed_mail) fail the mail in _prepare(), before its turn.
            self._fail(ctx, mail, "rejected_by_provider", str(error))
            return True
        if isinstance(error, OutcomeUnknown):
            m.unknown_outcomes.labels("no_answer", settings.unknown_outcome).inc()
            log.warning("%s: no answer from the provider (%s); policy %s", message_id, error, settings.unknown_outcome)
            if unknown_after_timeout(settings.unknown_outcome) is Action.DEAD_LETTER_UNKNOWN:
                self._fail(ctx, mail, "outcome_unknown", str(error))
                return True
        elif not isinstance(error, RetryableDelivery):
            self._fail(ctx, mail, "internal_error", f"{type(error).__name__} (see the worker log)")
            return True
        if isinstance(error, SendingBlocked):
            self.hold.block(_reason(error))
        self.ledger[message_id] = retrying_entry(tried, _reason(error), clock.now())
        return False

    def _report(self, ctx: RecordContext, mail: dict[str, Any], entry: dict[str, Any]) -> None:
        at = dt.datetime.fromisoformat(entry["at"])
        state = entry["state"]
        if state == "sent":
            self.outbox.status(ctx, mail, SENT, at, provider_id=entry["provider_id"])
        elif state == "failed":
            self.outbox.status(ctx, mail, FAILED, at, reason=entry["reason"])
        else:
            self.outbox.status(ctx, mail, state.upper(), at, reason=entry.get("reason"))

    def _fail(self, ctx: RecordContext, mail: dict[str, Any], reason: str, detail: str) -> None:
        now = self.clock.now()
        self.ledger[mail["message_id"]] = failed_entry(reason, now)
        ctx.dead_letter(Rejection("deliver", reason, detail, mail["message_id"]))
        self.outbox.status(ctx, mail, FAILED, now, reason=reason)


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
