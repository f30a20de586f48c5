"""``--shadow``: what a replay would send, against what the deployment sent for the same events.

The deployment's mails are its outbound records (both lanes) whose source is a replayed record:
``source_topic`` one of the replayed topics and ``source_timestamp`` within the replayed records'
first and last timestamp (the worker stamps each mail with its event's Kafka timestamp). Their
outcomes are the latest record per message id on the delivery-status topic. Matching is by
message id, which is deterministic (DESIGN invariant 1): the same event, rule and recipient give
the same id in the worker and in the replay.

``compare`` is pure; ``read_deployed`` reads the topics with the replay's read-only consumer.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NEW, GONE, CHANGED, FAILED = "new", "no-longer-sent", "changed", "sent-then-failed"


@dataclass(frozen=True)
class Mail:
    """What a comparison needs of one mail."""

    message_id: str
    tenant: str
    trigger: str
    subject: str
    text: str
    html: str

    @classmethod
    def of_record(cls, r: Mapping[str, Any]) -> Mail:
        return cls(r["message_id"], r["tenant_id"], f"{r['pack']}/{r['trigger']}", r["subject"], r["text"], r["html"])


@dataclass
class Difference:
    kind: str
    message_id: str
    tenant: str
    trigger: str
    subject: str
    diff: str = ""
    reason: str | None = None

    def json(self) -> str:
        data = {"shadow": self.kind, "message_id": self.message_id, "tenant": self.tenant, "trigger": self.trigger,
                "subject": self.subject}
        if self.diff:
            data["diff"] = self.diff
        if self.reason:
            data["reason"] = self.reason
        return json.dumps(data, ensure_ascii=False)


@dataclass
class Deployed:
    mails: dict[str, Mail] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # message id -> reason of its latest status, FAILED


def text_diff(old: Mail, new: Mail) -> str:
    """A unified diff of the subject line and the text part."""
    before = [f"Subject: {old.subject}", "", *old.text.splitlines()]
    after = [f"Subject: {new.subject}", "", *new.text.splitlines()]
    return "\n".join(difflib.unified_diff(before, after, f"sent/{old.message_id}", f"replay/{new.message_id}", lineterm=""))


def compare(replayed: Mapping[str, Mail], deployed: Deployed) -> list[Difference]:
    """New, no longer sent, changed (subject, text or HTML), and sent-then-failed, by message id."""
    out = []
    for mid, new in replayed.items():
        old = deployed.mails.get(mid)
        if old is None:
            out.append(Difference(NEW, mid, new.tenant, new.trigger, new.subject))
        elif (old.subject, old.text, old.html) != (new.subject, new.text, new.html):
            diff = text_diff(old, new) or "(the HTML part differs; the text part and subject do not)"
            out.append(Difference(CHANGED, mid, new.tenant, new.trigger, new.subject, diff))
    for mid, old in deployed.mails.items():
        if mid not in replayed:
            out.append(Difference(GONE, mid, old.tenant, old.trigger, old.subject))
        if mid in deployed.failed:
            out.append(Difference(FAILED, mid, old.tenant, old.trigger, old.subject, reason=deployed.failed[mid]))
    order = {NEW: 0, GONE: 1, CHANGED: 2, FAILED: 3}
    return sorted(out, key=lambda d: (order[d.kind], d.tenant, d.trigger, d.message_id))


def collect_deployed(
    outbound: Iterable[Mapping[str, Any]],
    statuses: Iterable[Mapping[str, Any]],
    *,
    topics: set[str],
    first: dt.datetime,
    last: dt.datetime,
    keep: Callable[[str, str], bool] = lambda tenant, trigger: True,
) -> Deployed:
    """The deployment's mails of the replayed records (see the module docstring), and which failed."""
    out = Deployed()
    for r in outbound:
        if r["source_topic"] in topics and first <= r["source_timestamp"] <= last and keep(r["tenant_id"], f"{r['pack']}/{r['trigger']}"):
            out.mails[r["message_id"]] = Mail.of_record(r)
    latest: dict[str, Mapping[str, Any]] = {}
    for s in statuses:
        if s["message_id"] in out.mails:
            latest[s["message_id"]] = s
    out.failed = {mid: s.get("reason") or "" for mid, s in latest.items() if s["status"] == "FAILED"}
    return out


def summary(differences: list[Difference], replayed: int, deployed: int) -> str:
    counts = {k: sum(1 for d in differences if d.kind == k) for k in (NEW, GONE, CHANGED, FAILED)}
    lines = [f"shadow: {replayed} mails from the replay, {deployed} sent by the deployment for the same records"]
    lines += [f"  {k:<17} {n}" for k, n in counts.items()]
    if not differences:
        lines.append("  no difference")
    return "\n".join(lines)
