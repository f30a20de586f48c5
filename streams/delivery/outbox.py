"""Where a rendered mail goes: the outbound topic of its lane, and where its delivery statuses go.

Both rendering stages use it (event mails in ``streams/ingest/agents.py``, timed mails in
``streams/triggers/agents.py``), and the sender reports its outcomes through it. Every record is
emitted through the input's ``RecordContext`` (``streams/runtime/emit.py``): inside the
transaction of the record that caused the mail and on its partition (see ``streams/topics.py``).
``high`` mails (password resets, MFA) go to ``<prefix>outbound-priority``, everything else to
``<prefix>outbound``: a separate topic is what keeps a password reset from waiting behind a
million reminders, since records of one partition are read in order and Faust pauses only the
partitions whose buffer is full.

A mail's QUEUED status is written only where ``TIDINGS_QUEUED_STATUS`` is on: it is a fourth
record per event and 6 % of the worker's CPU per event at saturation, for news the mail's outcome
brings anyway (see "Delivery status" in the README).

The output names below are the ones the composition root declares (``streams/app.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from streams.domain.status import QUEUED, SCHEMA, status_record

OUTBOUND, OUTBOUND_PRIORITY, DELIVERY_STATUS = "outbound", "outbound-priority", "delivery-status"


class Emits(Protocol):
    def emit(self, output: str, key: bytes | None, value: bytes | None, headers: Any = None) -> None: ...


class Outbox:
    def __init__(
        self,
        encode: Callable[[str, dict[str, Any]], bytes],
        on_status: Callable[[str], None] = lambda s: None,
        *,
        queued_status: bool = False,
    ) -> None:
        self._encode = encode
        self._on_status = on_status
        self.queued_status = queued_status

    def put(self, ctx: Emits, record: dict[str, Any], payload: bytes) -> None:
        """Queue one rendered mail (``payload`` is ``record`` encoded) for the sender.

        Raises ``RecordTooLarge`` (nothing queued) if the broker would refuse the mail.
        """
        lane = OUTBOUND_PRIORITY if record.get("priority", "normal") == "high" else OUTBOUND
        ctx.emit(lane, record["message_id"].encode(), payload)
        if self.queued_status:
            self.queued(ctx, record)

    def queued(self, ctx: Emits, record: dict[str, Any]) -> None:
        """The QUEUED status of a mail ``put`` has just queued."""
        self.status(ctx, record, QUEUED, record["created_at"])

    def status(self, ctx: Emits, mail: dict[str, Any], state: str, at: dt.datetime, **details: str | None) -> None:
        """One state change of ``mail`` on the delivery-status topic."""
        record = status_record(mail, state, at, **details)
        ctx.emit(DELIVERY_STATUS, mail["message_id"].encode(), self._encode(SCHEMA, record))
        self._on_status(state)
