"""The guarded record handler: no record is acknowledged without an outcome (DESIGN invariant 8).

faust-streaming acknowledges a record in the ``finally`` of its stream iterator, also when the
agent's body raised: its offset then commits with whatever the transaction holds, and the record
is never seen again. Every Tidings agent therefore runs its per-record work through ``Guard``,
which ends every record in exactly one of three ways:

``committed``
    The handler returned; what it emitted (``RecordContext``) is written in the input's
    transaction, and the offset commits with it.
``dead_lettered``
    The record (or its content) is bad: the handler raised ``RejectedInput`` (its reason code,
    e.g. ``message_too_large``), or something unexpected (``internal_error``, the exception's
    type in the detail, never its message, which may quote payload values). Whatever the
    handler emitted before is dropped; the dead letter is written in the input's transaction.
``held``
    Something the processing depends on failed: the broker refused a write, the disk is full, the
    local store broke (``InfrastructureFailure``, ``OSError``, Kafka errors, ``MemoryError``), or
    the handler was cancelled mid-way. The record is *not* acknowledged (its reference count is
    raised, so Faust's ``finally`` leaves it unacked) and ``on_hold`` is called. In a worker that
    stops the process at once (``stop_worker``, which first writes why to the termination log,
    ``Settings.termination_log``), without the graceful stop's final commit: the
    open transaction aborts, and after the restart the record is read again. Retrying in place
    instead would keep the partition's transaction open on a failing dependency, with later
    records' outputs piling into it. Transient trouble that has a better answer (SES throttling,
    an unreachable attachment store) is retried inside the handler and never reaches here.

Exceptions the guard cannot classify as bad input are bugs in Tidings; dead-lettering them with a
reason keeps the stream going and the record re-drivable (``tidings-redrive``) once fixed.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from streams.errors import InfrastructureFailure, RejectedInput
from streams.outcomes import Rejection
from streams.runtime.emit import Outputs, RecordContext, Source

log = logging.getLogger(__name__)

EXIT_HELD = 75  # EX_TEMPFAIL: a dependency failed; restart the worker and the record comes back
# Where the worker says why it stopped itself (Settings.termination_log; set by ``streams/__main__``).
termination_log: Path | None = None
TERMINATION_MESSAGE_MAX_BYTES = 4096  # what Kubernetes keeps of a termination message


class Outcome(enum.Enum):
    COMMITTED = "committed"
    DEAD_LETTERED = "dead_lettered"
    HELD = "held"


def _infrastructure_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [InfrastructureFailure, OSError, MemoryError]
    try:  # the broker's errors, by their root classes (the only Faust/aiokafka import here)
        from aiokafka.errors import KafkaError
        from faust.exceptions import ProducerSendError

        types += [KafkaError, ProducerSendError]
    except ImportError:  # pragma: no cover - both are dependencies
        pass
    return tuple(types)


INFRASTRUCTURE = _infrastructure_types()

Handler = Callable[[RecordContext], Awaitable[None]]


def hold(message: Any) -> None:
    """Keep Faust from acknowledging ``message`` when the iterator's ``finally`` acks it."""
    incref = getattr(message, "incref", None)
    if incref is not None:
        incref()


def record_termination(message: str) -> None:
    """Write why the worker stops to ``termination_log``, if set: best effort, it is stopping anyway
    (and the disk that failed may be the one the file is on)."""
    if termination_log is None:
        return
    try:
        termination_log.write_bytes(message.encode()[:TERMINATION_MESSAGE_MAX_BYTES])
    except OSError:
        log.warning("could not write the termination message to %s", termination_log)


def error_types(error: BaseException) -> str:
    """The error's type and those of its causes, with an OSError's errno name and the text of
    Tidings' own ``InfrastructureFailure`` (which names the table or producer and the store's
    error): what failed, for a termination message, without other messages, which may quote
    payload values."""
    names: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(names) < 4:
        seen.add(id(current))
        name = type(current).__name__
        if isinstance(current, OSError) and current.errno is not None and current.errno in errno.errorcode:
            name += f" [{errno.errorcode[current.errno]}]"
        elif isinstance(current, InfrastructureFailure):
            name += f" ({current})"
        names.append(name)
        current = current.__cause__ or current.__context__
    return " from ".join(names)


def stop_worker(error: BaseException, where: str) -> None:
    """Exit now, without the graceful stop's commit, so the open transactions abort."""
    record_termination(f"held (exit {EXIT_HELD}): {where} failed with {error_types(error)}\n")
    log.critical("stopping the worker: %s failed with %s; the record is not acknowledged and will be read "
                 "again after the restart", where, type(error).__name__, exc_info=error)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_HELD)


class Guard:
    """Runs one agent's handler for each record; see the module docstring for the outcomes."""

    def __init__(
        self,
        stage: str,
        outputs: Outputs,
        *,
        on_hold: Callable[[BaseException, str], None] = stop_worker,
        count: Callable[[str, Outcome], None] = lambda stage, outcome: None,
    ) -> None:
        self.stage = stage
        self.outputs = outputs
        self.on_hold = on_hold
        self.count = count

    async def __call__(self, source: Source, handler: Handler, message: Any = None) -> Outcome:
        ctx = self.outputs.context(source, self.stage)
        try:
            try:
                await handler(ctx)
            except RejectedInput as e:
                ctx.discard()
                ctx.dead_letter(Rejection(self.stage, e.reason, e.detail))
            except INFRASTRUCTURE:
                raise
            except Exception as e:
                ctx.discard()
                log.error("%s: unexpected %s\n%s", self._where(source), type(e).__name__, _frames(e))
                ctx.dead_letter(Rejection(self.stage, "internal_error", f"{type(e).__name__} (see the worker log)"))
            outcome = Outcome.DEAD_LETTERED if ctx.rejections and not _emitted_beyond_dead_letters(ctx) else Outcome.COMMITTED
            await ctx.flush()
        except asyncio.CancelledError:
            hold(message)  # stopping mid-record: it was not done, so it must come back
            self.count(self.stage, Outcome.HELD)
            raise
        except BaseException as e:  # INFRASTRUCTURE, or the dead letter itself could not be written
            if not isinstance(e, Exception):
                raise
            hold(message)
            self.count(self.stage, Outcome.HELD)
            self.on_hold(e, self._where(source))
            return Outcome.HELD
        self.count(self.stage, outcome)
        return outcome

    def _where(self, source: Source) -> str:
        """The record, for the log (formatted only when something is logged: not once a record)."""
        return f"{self.stage} of {source.topic}[{source.partition}]@{source.offset}"


def _emitted_beyond_dead_letters(ctx: RecordContext) -> bool:
    quiet = {ctx.outputs.dead_letter_topic} | {ctx.outputs.topics[name] for name in ctx.outputs.reports}
    return any(p.topic not in quiet for p in ctx.pending)


def _frames(error: BaseException) -> str:
    """The traceback without the exception's message (which may quote payload values)."""
    return "".join(traceback.format_tb(error.__traceback__))
