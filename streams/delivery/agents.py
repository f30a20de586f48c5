"""Faust wiring of the sender: drain the outbound topic into the email provider, once per id.

The ledger table (keyed by message id, co-partitioned with the outbound topic) is read before
every send; an id with a final outcome is skipped and counted. Transient provider failures are
retried with capped exponential backoff, holding the partition (and so the backlog) until the
provider recovers; permanent ones are recorded in the ledger and dead-lettered.

Known limit, tracked for the delivery hardening work: a crash after the provider accepted a mail
but before the ledger write committed sends that mail again on restart (at-least-once at that
one point). A graceful stop commits first, so it sends nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from streams.delivery.ledger import already_done, failed_entry, sent_entry
from streams.delivery.ledger import suppressed_entry
from streams.delivery.mime import build_mime
from streams.rendering.render import CONFIGURATION_SET_HEADER
from streams.errors import PermanentDelivery, RejectedInput, RetryableDelivery
from streams.ingest.deadletter import dead_letter_headers
from streams.ingest.pipeline import Rejection

if TYPE_CHECKING:
    import faust

    from streams.app import Runtime

log = logging.getLogger(__name__)

RETRY_FIRST_DELAY_SECONDS = 0.2
RETRY_MAX_DELAY_SECONDS = 30.0  # long enough to ride out throttling, short enough to resume promptly


def register(app: faust.App, rt: Runtime) -> None:
    outbound = app.topic(rt.topics.outbound, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    dead_letter = app.topic(
        rt.topics.dead_letter, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    # No value_type: values stay plain JSON. value_type=dict does not decode back from RocksDB
    # (Faust takes it for a model class).
    ledger = app.Table("delivery-ledger", key_type=str, partitions=rt.settings.partitions)
    codec, sender, store, m, clock = rt.codec, rt.sender, rt.attachments, rt.metrics, rt.clock

    async def deliver_once(mail: dict) -> str:  # type: ignore[type-arg]
        files = [(a, await store.fetch(a["uri"])) for a in mail.get("attachments", ())]
        # MIME assembly costs milliseconds of CPU (the email package folds every header):
        # keep it off the event loop that also runs ingest.
        raw = await asyncio.to_thread(build_mime, mail, files)
        return await sender.send(
            from_address=mail["from_address"],
            to_address=mail["to_address"],
            raw=raw,
            tags={"tenant": mail["tenant_id"], "trigger": f"{mail['pack']}-{mail['trigger']}".replace(".", "_")},
            configuration_set=mail.get("headers", {}).get(CONFIGURATION_SET_HEADER),
        )

    async def send_with_retry(mail: dict) -> str:  # type: ignore[type-arg]
        delay = RETRY_FIRST_DELAY_SECONDS
        while True:
            try:
                return await deliver_once(mail)
            except RetryableDelivery as e:
                m.send_retries.labels(str(e).split(":")[0]).inc()
                log.warning("provider busy or unreachable (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY_SECONDS)

    async def deliver(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            msg = event.message
            try:
                mail = codec.decode(event.value).record
            except RejectedInput as e:
                await _dead_letter(Rejection("deliver", e.reason, e.detail), msg)
                continue
            message_id, trigger = mail["message_id"], f"{mail['pack']}/{mail['trigger']}"
            if already_done(ledger.get(message_id)):
                m.duplicates_skipped.labels(mail["tenant_id"], trigger).inc()
                continue
            # Suppression (streams/suppression/): a bounced, complaining or unsubscribed recipient.
            if (s := rt.suppressions.lookup(mail["tenant_id"], mail["to_address"], mail.get("transactional", True))) is not None:
                ledger[message_id] = suppressed_entry(s.reason, clock.now())
                m.mails_suppressed.labels(mail["tenant_id"], s.reason).inc()
                continue
            try:
                provider_id = await send_with_retry(mail)
            except PermanentDelivery as e:
                ledger[message_id] = failed_entry(str(e), clock.now())
                reason = str(e).split(":")[0] if str(e).startswith("attachment_") else "rejected_by_provider"
                await _dead_letter(Rejection("deliver", reason, str(e), message_id), msg)
                continue
            except Exception:
                log.exception("sending %s failed unexpectedly", message_id)
                ledger[message_id] = failed_entry("internal_error", clock.now())
                await _dead_letter(Rejection("deliver", "internal_error", "see worker log", message_id), msg)
                continue
            now = clock.now()
            ledger[message_id] = sent_entry(provider_id, now)
            m.emails_sent.labels(mail["tenant_id"], trigger).inc()
            m.event_to_sent_seconds.labels(trigger).observe(max(0.0, (now - mail["source_timestamp"]).total_seconds()))

    async def _dead_letter(rejection: Rejection, msg) -> None:  # type: ignore[no-untyped-def]
        log.warning("dead-lettered outbound %s@%s: %s (%s)", msg.partition, msg.offset, rejection.reason, rejection.detail)
        await dead_letter.send(
            key=msg.key,
            value=msg.value,
            partition=msg.partition,  # same transaction as the input offset, see ingest/agents.py
            headers=dead_letter_headers(rejection, topic=msg.topic, partition=msg.partition, offset=msg.offset),
        )
        m.failures.labels(rejection.stage, rejection.reason).inc()
        m.dead_letters.labels(rejection.stage, rejection.reason).inc()

    app.agent(outbound, name="tidings.deliver")(deliver)
