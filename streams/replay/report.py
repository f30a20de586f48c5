"""What a replay says about each mail: one ``MailLine`` per mail and why, the summary, the gallery.

Pure: no Kafka, no files except where a writer is handed in. ``why`` is one of

``fired``          rendered and, by the ledger and the suppression list, sent
``duplicate``      the ledger already holds its message id (the sender would skip it)
``suppressed``     the recipient is on the tenant's suppression list, or is an inactive customer
``disabled``       the tenant has the trigger (or its pack) off: nothing would be rendered
``stale``          the event is older than the trigger's max age (DESIGN invariant 10)
``dead-lettered``  the record or the mail would go to the dead-letter topic; ``reason`` says why
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

import orjson

from streams.delivery.ledger import sent_entry
from streams.delivery.policy import Action, UnknownOutcomePolicy, decide
from streams.suppression.model import SuppressionList

FIRED, DUPLICATE, SUPPRESSED, DISABLED, STALE, DEAD_LETTERED = "fired", "duplicate", "suppressed", "disabled", "stale", "dead-lettered"
WHYS = (FIRED, DUPLICATE, SUPPRESSED, DISABLED, STALE, DEAD_LETTERED)
DRY_RUN_PROVIDER_ID = "dry-run"  # what the replay's own ledger records as the "SES id" of a mail it decided to send


@dataclass
class MailLine:
    """One mail of a replay (or one record that yields none: a dead letter without a message id)."""

    why: str
    message_id: str | None = None
    tenant: str | None = None
    trigger: str | None = None  # pack/trigger
    recipient: str | None = None  # masked unless --show-recipients
    locale: str | None = None
    subject: str | None = None
    reason: str | None = None  # of a suppression or a dead letter
    source: str | None = None  # topic[partition]@offset of the input record
    at: str | None = None  # the replay clock when it was decided (simulations: the day it goes out)
    # Kept for --html and --shadow; never in the JSON line.
    text: str | None = None
    html: str | None = None

    def json(self) -> str:
        return self.json_bytes().decode()

    def json_bytes(self) -> bytes:
        """The JSON line without its newline: the fields that are set, in their order, UTF-8.

        Built by hand and written by orjson: ``dataclasses.asdict`` and ``json.dumps`` cost more
        than the rest of a mail's line together.
        """
        return orjson.dumps({k: v for k in _LINE_FIELDS if (v := getattr(self, k)) is not None})


_LINE_FIELDS = tuple(f.name for f in fields(MailLine) if f.name not in ("text", "html"))


def mask(address: str | None) -> str | None:
    """``j***@example.com``: enough to tell mails apart, not enough to read the address.

    A short hash of the whole address follows, so two masked lines of one recipient match.
    """
    if not address:
        return address
    local, _, domain = address.rpartition("@")
    if not local:
        local, domain = address, ""
    digest = hashlib.sha256(address.lower().encode()).hexdigest()[:6]
    first = local[:1].lower()
    return f"{first}***@{domain.lower()}#{digest}" if domain else f"{first}***#{digest}"


class DeliveryDecisions:
    """The sender's two decisions before a request, on the replay's own ledger (a dict).

    ``decide`` is the sender's own policy (``streams/delivery/policy.py``) and ``lookup`` the
    sender's suppression list; the ledger starts empty, so a mail is a duplicate when the range
    holds it twice (a re-published event, a redelivery) and the first copy went through.

    ``lookup`` normalises the address (email-validator, most of a decision's cost) before it can
    say "not suppressed"; a tenant with no entry at all needs no lookup. Which tenants have
    entries is worked out again whenever the list's size changed (in a replay the list is read
    before the run and then stays as it is).

    The ledger holds one entry per mail of the range, so entries are shared: every mail decided
    at one clock value gets the same (read-only) sent entry, leaving a key per mail.
    """

    def __init__(self, suppressions: SuppressionList, policy: UnknownOutcomePolicy = "resend", ledger: MutableMapping[str, Any] | None = None):
        self.suppressions = suppressions
        self.policy = policy
        self.ledger: MutableMapping[str, Any] = ledger if ledger is not None else {}
        self._tenants: tuple[int, frozenset[str]] = (-1, frozenset())
        self._sent: tuple[dt.datetime | None, dict[str, Any]] = (None, {})

    def _suppressing(self, tenant_id: str) -> bool:
        size = len(self.suppressions)
        if self._tenants[0] != size:
            self._tenants = (size, frozenset(s.tenant_id for s in self.suppressions))
        return tenant_id in self._tenants[1]

    def __call__(self, mail: dict[str, Any], now: dt.datetime) -> tuple[str, str | None]:
        """``(why, reason)`` for one outbound record; records the outcome as the sender would."""
        message_id = mail["message_id"]
        entry = self.ledger.get(message_id)  # none for most mails: the sender sends those
        if entry is not None and decide(entry, redrive=False, policy=self.policy) is Action.SKIP_DUPLICATE:
            return DUPLICATE, None
        tenant_id = mail["tenant_id"]
        s = self.suppressions.lookup(tenant_id, mail["to_address"], mail.get("transactional", True)) if self._suppressing(tenant_id) else None
        if s is not None:
            self.ledger[message_id] = {"state": "suppressed", "reason": s.reason}
            return SUPPRESSED, s.reason
        if self._sent[0] != now:
            self._sent = (now, sent_entry(DRY_RUN_PROVIDER_ID, now))
        self.ledger[message_id] = self._sent[1]
        return FIRED, None


class Summary:
    """Counts per tenant, trigger and why; per day and trigger for simulations."""

    def __init__(self) -> None:
        self.by_trigger: Counter[tuple[str, str, str]] = Counter()
        self.by_day: Counter[tuple[str, str]] = Counter()
        self.reasons: Counter[str] = Counter()
        self.records = 0

    def add(self, line: MailLine) -> None:
        self.by_trigger[(line.tenant or "-", line.trigger or "-", line.why)] += 1
        if line.reason:
            self.reasons[f"{line.why}: {line.reason}"] += 1
        if line.why == FIRED and line.at:
            self.by_day[(line.at[:10], line.trigger or "-")] += 1

    def count(self, why: str) -> int:
        return sum(n for (_, _, w), n in self.by_trigger.items() if w == why)

    def table(self) -> str:
        """Tenant x trigger rows, one column per why, and a total line."""
        rows: dict[tuple[str, str], Counter[str]] = {}
        for (tenant, trigger, why), n in self.by_trigger.items():
            rows.setdefault((tenant, trigger), Counter())[why] += n
        head = ["tenant", "trigger", *WHYS]
        body = [[t, tr, *(str(c[w]) for w in WHYS)] for (t, tr), c in sorted(rows.items())]
        body.append(["total", "", *(str(self.count(w)) for w in WHYS)])
        return _columns(head, body)

    def days(self) -> str:
        """Mails that would go out, per day and trigger (simulations)."""
        if not self.by_day:
            return "no mail would go out"
        body = [[day, trigger, str(n)] for (day, trigger), n in sorted(self.by_day.items())]
        return _columns(["day", "trigger", "mails"], body)


def _columns(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r).rstrip() for r in [head, *body])


class JsonLines:
    """The JSON Lines output: one line per mail, as it is decided."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def add(self, line: MailLine) -> None:
        self.out.write(line.json() + "\n")


class Gallery:
    """``--html DIR``: every rendered mail's HTML and text, and an index page (``rendering/preview.py``'s)."""

    LIMIT = 5_000  # mails with a page of their own; the index says how many more there were

    def __init__(self, folder: Path) -> None:
        from streams.tools.preview import Entry

        self.folder = folder
        self.entries: list[Entry] = []
        self.left_out = 0

    def add(self, line: MailLine) -> None:
        from streams.tools.preview import Entry

        if line.html is None or line.message_id is None:
            return
        if len(self.entries) >= self.LIMIT:
            self.left_out += 1
            return
        name = f"mails/{line.tenant}/{line.message_id}.html"
        target = self.folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(line.html, encoding="utf-8")
        target.with_suffix(".txt").write_text(f"Subject: {line.subject}\n\n{line.text}", encoding="utf-8")
        self.entries.append(Entry(
            tenant=line.tenant or "", trigger=line.trigger or "", role=line.why, template=line.message_id,
            language=line.locale or "", locale=line.locale or "", subject=line.subject or "", text=line.text or "",
            html_file=name,
        ))

    def close(self, now: dt.datetime) -> Path:
        from streams.tools.preview import index_page

        self.folder.mkdir(parents=True, exist_ok=True)
        more = f"; {self.left_out} more not shown" if self.left_out else ""
        index = self.folder / "index.html"
        index.write_text(index_page(self.entries, now, meta=f"{len(self.entries)} mails of a replay{more}, rendered as of "
                                    f"{now.isoformat()}. Generated by <code>tidings-replay --html</code>."), encoding="utf-8")
        return index


def fan_out(sinks: Iterable[Any], line: MailLine) -> None:
    for sink in sinks:
        sink.add(line)
