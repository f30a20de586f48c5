"""Where a rendered mail goes: the outbound topic of its lane, and a QUEUED delivery status.

Both rendering stages use it (event mails in ``streams/ingest/agents.py``, timed mails in
``streams/triggers/agents.py``), inside the transaction of the record that caused the mail and on
its partition (see ``streams/topics.py``). ``high`` mails (password resets, MFA) go to
``<prefix>outbound-priority``, everything else to ``<prefix>outbound``: a separate topic is what
keeps a password reset from waiting behind a million reminders, since records of one partition
are read in order and Faust pauses only the partitions whose buffer is full.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from streams.delivery.status import QUEUED, SCHEMA, status_record

if TYPE_CHECKING:
    import faust

    from streams.app import Runtime

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


class Outbox:
    def __init__(self, app: faust.App, rt: Runtime) -> None:
        self._names = rt.topics
        self._codec = rt.codec
        self._lanes = {name: app.topic(name, **RAW) for name in (rt.topics.outbound, rt.topics.outbound_priority)}
        self._status = app.topic(rt.topics.delivery_status, **RAW)

    async def put(self, record: dict[str, Any], payload: bytes, partition: int) -> None:
        """Queue one rendered mail (``payload`` is ``record`` encoded) for the sender."""
        topic = self._lanes[self._names.outbound_for(record.get("priority", "normal"))]
        await topic.send(key=record["message_id"].encode(), value=payload, partition=partition)
        await self.status(record, QUEUED, record["created_at"], partition)

    async def status(self, mail: dict[str, Any], state: str, at: dt.datetime, partition: int, **details: str) -> None:
        """One state change of ``mail`` on the delivery-status topic."""
        record = status_record(mail, state, at, **details)
        await self._status.send(key=mail["message_id"].encode(), value=self._codec.encode(SCHEMA, record), partition=partition)
