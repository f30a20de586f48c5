"""The preview gallery: every mail every example tenant can send, rendered from the pack samples.

For each tenant in ``deploy/tenants/`` x each trigger of its packs it has on x each mail of the
trigger x each language the tenant offers, the mail goes through the same ``Renderer`` the worker
uses, with a fixed ``now`` and the recipients' locale set to the language:

- an event trigger renders from the pack's sample event (``samples.yaml``, fixed event id);
- a timed trigger renders from a sample state of its entity (``timed_sample``: the samples of the
  events that feed it, applied as the worker applies them) and each timer the trigger plans for
  that state with the tenant's figures, through ``timed_context`` as the firing agent does: one
  mail per dunning step, the due time the one the worker would use.

Each mail's HTML and text are written under ``<out>/mails/`` and an ``index.html`` lists them:
tenant, trigger, role, language, the subject linking to the HTML, the text part beside it.
Nothing is sent and no broker is needed.

    python -m streams.tools.preview [--out DIR]     (default .tidings/preview/)
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from streams.domain.evaluate import event_firings
from streams.domain.projection import apply
from streams.domain.rules import PACKS_DIR, Catalog, EventRule, MailRule, TimedRule, Trigger
from streams.domain.samples import sample_event
from streams.domain.tenants import Tenant, TenantDirectory
from streams.domain.timers import Timer, plan
from streams.errors import RejectedInput
from streams.rendering.render import Renderer, Source
from streams.settings import REPO_ROOT
from streams.triggers.firing import timed_context, timed_firings

PREVIEW_DIR = REPO_ROOT / ".tidings" / "preview"
# A fixed clock and event ids keep the gallery byte-for-byte stable between runs.
NOW = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone.utc)
_EVENT_IDS = uuid.UUID("5b1c6a52-7d0e-4f7e-9d38-1d2f4b7e0a11")
SAMPLE_ENTITY_ID = "sample"
Recipients = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Entry:
    """One mail of the gallery (or the reason it could not be rendered)."""

    tenant: str
    trigger: str
    role: str
    template: str
    language: str
    locale: str = ""  # the language it rendered in (differs from ``language`` on a fallback)
    subject: str = ""
    text: str = ""
    html_file: str = ""  # relative to the gallery folder
    error: str = ""
    step: int = 0  # the step of a dunning trigger's mail, 0 otherwise


def _mails(catalog: Catalog, tenant: Tenant) -> list[tuple[Trigger, MailRule]]:
    return [
        (trigger, mail)
        for pack in tenant.packs
        for trigger in catalog.triggers()
        if trigger.pack == pack and tenant.is_enabled(trigger.key, trigger.rule.enabled_by_default)
        for mail in trigger.rule.mails
    ]


def timed_sample(
    catalog: Catalog, trigger: Trigger, tenant: Tenant, now: dt.datetime, *, recipient: Recipients | None = None
) -> tuple[dict[str, Any] | None, list[Timer]]:
    """A sample state of a timed trigger's entity in which the trigger fires, and the timers it plans.

    The samples of the events that feed the entity are applied in the pack's order, as the worker
    applies events (``domain/projection.py``), and planned with the tenant's figures
    (``timers.plan``). An event after which the trigger would no longer plan anything (a payment,
    a cancellation, an inactive customer, a read message) is left out: the samples of one entity
    describe its whole life, and the gallery shows the mail the state before that end would send.
    ``recipient`` rewrites the samples' recipients as ``sample_event`` does.
    """
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    spec = catalog.entity(f"{trigger.pack}.{rule.entity}")
    state: dict[str, Any] | None = None
    timers: list[Timer] = []
    for type_name in spec.events:
        if type_name not in catalog.samples:
            continue
        event = sample_event(catalog.samples, type_name, tenant.tenant_id, now=now, recipient=recipient)
        new = apply(state, type_name, event, spec, tenant_id=tenant.tenant_id, entity_id=SAMPLE_ENTITY_ID, occurred_at=now)
        planned = plan([trigger], new, tenant, {}, now) if new is not None else []
        if new is None or (timers and not planned):
            continue  # this event ends what the trigger follows
        state, timers = new, planned
    return state, sorted(timers)


def _with_locale(language: str) -> Recipients:
    return lambda _path, person: {**person, "locale": language}


def render_entry(
    renderer: Renderer, catalog: Catalog, tenant: Tenant, trigger: Trigger, mail: MailRule, language: str, now: dt.datetime
) -> list[tuple[Entry, str]]:
    """The mails of the gallery for one trigger, mail and language, each with its HTML (empty when it failed).

    One mail, except for a dunning trigger: one per step.
    """
    if isinstance(trigger.rule, TimedRule):
        return _render_timed(renderer, catalog, tenant, trigger, mail, language, now)
    return [_render_event(renderer, catalog, tenant, trigger, mail, language, now)]


def _render_event(
    renderer: Renderer, catalog: Catalog, tenant: Tenant, trigger: Trigger, mail: MailRule, language: str, now: dt.datetime
) -> tuple[Entry, str]:
    rule = trigger.rule
    assert isinstance(rule, EventRule)
    entry = Entry(tenant.tenant_id, trigger.key, mail.role, mail.template, language)
    event: dict[str, Any] = sample_event(catalog.samples, rule.event, tenant.tenant_id, now=now, recipient=_with_locale(language))
    event["envelope"]["event_id"] = str(uuid.uuid5(_EVENT_IDS, f"{tenant.tenant_id}/{trigger.key}/{language}"))
    firings = [f for f in event_firings(rule.event, event, catalog, tenant) if f.trigger == trigger and f.mail == mail]
    if not firings:
        return replace(entry, error="the sample event fires no such mail"), ""
    try:
        record = renderer.render(firings[0], tenant, event, Source("preview", event["envelope"]["event_id"], now), now).record
    except RejectedInput as e:
        return replace(entry, error=f"{e.reason}: {e.detail}"), ""
    return _rendered(entry, record)


def _render_timed(
    renderer: Renderer, catalog: Catalog, tenant: Tenant, trigger: Trigger, mail: MailRule, language: str, now: dt.datetime
) -> list[tuple[Entry, str]]:
    entry = Entry(tenant.tenant_id, trigger.key, mail.role, mail.template, language)
    state, timers = timed_sample(catalog, trigger, tenant, now, recipient=_with_locale(language))
    if state is None or not timers:
        return [(replace(entry, error="the samples of its entity plan no timer for this tenant"), "")]
    out = []
    for timer in timers:
        step_entry = replace(entry, step=timer.step)
        firings = [f for f in timed_firings(trigger, timer, state, tenant, SAMPLE_ENTITY_ID) if f.mail == mail]
        if not firings:
            out.append((replace(step_entry, error="the sample state names no such recipient"), ""))
            continue
        context = timed_context(trigger, timer, state, tenant, catalog.entity_of(trigger).fields())
        source = Source("preview", f"timer:{timer.slot}:{timer.occurrence}", timer.due)
        try:
            record = renderer.render(firings[0], tenant, context, source, timer.due).record
        except RejectedInput as e:
            out.append((replace(step_entry, error=f"{e.reason}: {e.detail}"), ""))
            continue
        out.append(_rendered(step_entry, record))
    return out


def _rendered(entry: Entry, record: dict[str, Any]) -> tuple[Entry, str]:
    step = f".step{entry.step}" if entry.step else ""
    name = f"mails/{entry.tenant}/{entry.trigger.split('/', 1)[0]}.{entry.template}.{entry.language}{step}.html"
    rendered = replace(entry, locale=record["locale"], subject=record["subject"], text=record["text"], html_file=name)
    return rendered, record["html"]


def build_gallery(
    out: Path,
    *,
    templates_dir: Path = REPO_ROOT / "templates",
    tenants_dir: Path = REPO_ROOT / "deploy" / "tenants",
    packs_dir: Path = PACKS_DIR,
    now: dt.datetime = NOW,
) -> tuple[Path, list[Entry]]:
    """Render the gallery into ``out``; returns the index file and the entries."""
    catalog = Catalog.load(packs_dir)
    renderer = Renderer(templates_dir)
    entries = []
    for tenant in sorted(TenantDirectory.load(tenants_dir), key=lambda t: t.tenant_id):
        for trigger, mail in _mails(catalog, tenant):
            for language in tenant.languages:
                for entry, page in render_entry(renderer, catalog, tenant, trigger, mail, language, now):
                    if entry.html_file:
                        target = out / entry.html_file
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_text(page, encoding="utf-8")
                        target.with_suffix(".txt").write_text(f"Subject: {entry.subject}\n\n{entry.text}", encoding="utf-8")
                    entries.append(entry)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    index.write_text(index_page(entries, now), encoding="utf-8")
    return index, entries


_STYLE = """
body { font-family: system-ui, Arial, sans-serif; margin: 24px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; }
p.meta { color: #6b6b70; margin: 0 0 18px; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; background: #fff; }
col.tenant { width: 11%; } col.trigger { width: 17%; } col.role { width: 8%; } col.language { width: 6%; }
col.subject { width: 19%; }
th, td { border: 1px solid #ddd; padding: 6px 8px; vertical-align: top; text-align: left; font-size: 13px;
         overflow-wrap: break-word; }
th { background: #f0f1f3; position: sticky; top: 0; }
td.subject { font-weight: 600; }
td.subject small { display: block; font-weight: normal; color: #9a6700; }
td.error { color: #b00020; font-family: monospace; }
pre { margin: 0; max-height: 18em; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px;
      line-height: 1.4; }
"""


def _breakable(name: str) -> str:
    """Escaped, with line-break opportunities after the dots and slashes of a trigger key."""
    return html.escape(name).replace("/", "/<wbr>").replace(".", ".<wbr>")


def index_page(entries: list[Entry], now: dt.datetime, meta: str | None = None) -> str:
    """The index of a gallery; ``meta`` (HTML) replaces the line that says where the mails came from."""
    esc = html.escape
    rows = []
    for e in entries:
        step = f" <small>step {e.step}</small>" if e.step else ""
        cells = [
            f"<td>{esc(e.tenant)}</td>",
            f"<td>{_breakable(e.trigger)}{step}</td>",
            f"<td>{esc(e.role)}</td>",
            f"<td>{esc(e.language)}</td>",
        ]
        if e.error:
            cells.append(f'<td class="error" colspan="2">{esc(e.template)}: {esc(e.error)}</td>')
        else:
            note = f"<small>rendered in {esc(e.locale)} (fallback)</small>" if e.locale != e.language else ""
            cells.append(f'<td class="subject"><a href="{esc(quote(e.html_file))}">{esc(e.subject)}</a>{note}</td>')
            cells.append(f"<td><pre>{esc(e.text)}</pre></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    failed = sum(1 for e in entries if e.error)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8"><title>Tidings mail preview</title>',
            f"<style>{_STYLE}</style></head>",
            "<body>",
            "<h1>Tidings mail preview</h1>",
            f'<p class="meta">{meta}</p>' if meta is not None else
            f'<p class="meta">{len(entries)} mails from the pack samples for the example tenants in deploy/tenants, '
            f"rendered as of {esc(now.isoformat())}{f'; {failed} failed' if failed else ''}. Generated by "
            "<code>python -m streams.tools.preview</code>.</p>",
            "<table>",
            '<colgroup><col class="tenant"><col class="trigger"><col class="role"><col class="language">'
            '<col class="subject"><col class="text"></colgroup>',
            "<thead><tr><th>Tenant</th><th>Trigger</th><th>Role</th><th>Lang.</th><th>Subject</th><th>Text part</th></tr></thead>",
            "<tbody>",
            *rows,
            "</tbody></table>",
            "</body></html>",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.tools.preview", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PREVIEW_DIR, help="gallery folder (default .tidings/preview/)")
    args = parser.parse_args(argv)
    index, entries = build_gallery(args.out)
    failed = [e for e in entries if e.error]
    for e in failed:
        print(f"{e.tenant} {e.trigger} {e.template} {e.language}: {e.error}", file=sys.stderr)
    print(f"{index} ({len(entries) - len(failed)} mails{f', {len(failed)} failed' if failed else ''})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
