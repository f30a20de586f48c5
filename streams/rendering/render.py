"""Render one firing into the outbound record (``tidings.outbound.RenderedEmail``).

Template files live at ``templates/<pack>/<template>/<locale>/{subject.txt,body.html,body.txt}``
and extend the brand layouts in ``templates/_layouts/``. The HTML's CSS is inlined (css-inline) when
it has style rules to inline (``streams/rendering/css.py``). The render context is the event record
(its fields at the top level, as merge tags), plus ``recipient``, ``brand``, ``locale`` and
``time_zone``. Any failure of one mail raises ``RenderFailed`` for that mail only.

Each mail renders under one ``RenderBudget`` (``streams/rendering/budget.py``): its three parts
share one meter of loop iterations and calls, CPU time and characters produced (attachment file
names get a meter of their own), and each part is held to its own size. Compiling is outside the
meter: a template compiles once per worker, at a cost its size (``MAX_TEMPLATE_CHARS``) bounds. A mail over budget fails with the budget named
in the detail (``render budget 'iterations' exceeded: ...``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Template, TemplateError

from streams.domain.address import AddressError, sendable
from streams.domain.evaluate import Firing
from streams.domain.tenants import Tenant
from streams.domain.token import TokenSigner
from streams.errors import InvalidRecipient, RenderFailed
from streams.rendering.budget import BudgetExceeded, RenderBudget, metered, part_check
from streams.rendering.css import StyleInliner
from streams.rendering.environment import OverrideLoader, build_environment, warm_locales
from streams.rendering.locale import LAST_RESORT, Fallback, babel_locale, choose_locale, normalize

PARTS = ("subject.txt", "body.html", "body.txt")
# SES applies the configuration set named in this header of a raw message; the sender also passes
# it as ConfigurationSetName, so the tenant's choice holds whichever SES honours.
CONFIGURATION_SET_HEADER = "X-SES-CONFIGURATION-SET"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def ses_tags(tenant_id: str, pack: str, trigger: str) -> dict[str, str]:
    """SES message tags: names and values allow only ASCII letters, digits, ``_`` and ``-``."""
    return {"tenant": _TAG_UNSAFE.sub("_", tenant_id), "trigger": _TAG_UNSAFE.sub("_", f"{pack}-{trigger}")}


def unsubscribe_headers(tenant: Tenant, to_address: str, tokens: TokenSigner | None) -> dict[str, str]:
    """List-Unsubscribe (RFC 2369) and, with an https link, List-Unsubscribe-Post (RFC 8058 one-click).

    The link carries an opaque token of tenant and address (``streams/domain/token.py``); a
    tenant with a base URL is only served by workers holding the secret to sign it (``streams/app.py``).
    """
    setting = tenant.unsubscribe
    if setting is None:
        return {}
    targets = []
    if setting.base_url and tokens is not None:
        targets.append(f"<{setting.base_url}/unsubscribe/{tokens.issue(tenant.tenant_id, to_address)}>")
    if setting.mailto:
        targets.append(f"<mailto:{setting.mailto}?subject=unsubscribe>")
    if not targets:
        return {}
    headers = {"List-Unsubscribe": ", ".join(targets)}
    if targets[0].startswith("<https://"):
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def single_line(value: str) -> str:
    """A header-safe line: control characters (CR, LF, NUL ...) become spaces, runs collapse.

    This is what keeps a customer-supplied name or a template's subject from ever starting a new
    mail header.
    """
    if value.isprintable() and "  " not in value:
        # Neither expression can match: every control character and every space but " " is
        # unprintable. Most subjects and names are this (three lines a mail).
        return value.strip()
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()


@dataclass(frozen=True)
class Source:
    """Where the event that caused a mail came from."""

    topic: str
    event_id: str
    timestamp: dt.datetime


@dataclass(frozen=True)
class Rendered:
    record: dict[str, Any]
    fallback: Fallback


def format_locale(requested: str | None, template_locale: str, tenant_default: str = LAST_RESORT) -> str:
    """The locale for dates and money: the recipient's region when it speaks the template's language.

    Templates are chosen by language (an ``en`` template serves en-GB and en-US alike), but a
    British reader expects "1 December 2026" and a US reader "December 1, 2026". A region Babel
    does not know (``en-EU``, ``de-XX``) falls back to the language, then the tenant's default,
    then English (``streams/rendering/locale.py``), so it never fails the mail.
    """
    tag = normalize(requested) if requested else None
    same_language = tag if tag is not None and tag.split("-")[0] == template_locale.split("-")[0] else None
    return babel_locale(same_language, template_locale, tenant_default)


def _zone_or(requested: object, default: str) -> str:
    """The recipient's IANA time zone when it is one, else the tenant's (a bad zone in an event is not the mail's end)."""
    if isinstance(requested, str) and requested and len(requested) <= 64:
        try:
            ZoneInfo(requested)
            return requested
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return default


def _override_locales(tenant: Tenant, pack: str, template: str) -> frozenset[str]:
    """Languages in which the tenant overrides all three parts of this mail."""
    if not tenant.templates:
        return frozenset()
    return frozenset(
        lang for lang in tenant.languages if all(f"{pack}/{template}/{lang}/{p}" in tenant.templates for p in PARTS)
    )


@dataclass
class _TenantParts:
    """What every mail of one tenant takes from its configuration, worked out once per ``Tenant``.

    A tenant is frozen (a changed one is a new object), so these are kept by the object's identity,
    the object with them so its id is never reused while they are kept. Worked out per mail they
    cost 3 to 4 % of a dry run's event (measured). ``brand`` goes into every
    render context as it is: templates run in the immutable sandbox and cannot change it.
    """

    tenant: Tenant
    brand: dict[str, Any]
    from_name: str
    overrides: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)  # (pack, template) -> languages
    tags: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # (pack, trigger) -> SES tags
    # (recipient's locale, pack, template) -> (template language, fallback, formatting locale)
    locales: dict[tuple[str | None, str, str], tuple[str, Fallback, str]] = field(default_factory=dict)
    # <pack>/<template>/<language> -> its three compiled parts (the tenant's overrides or the pack's
    # files): three loads from Jinja's cache a mail, and a hash of each override's source, saved.
    # Templates never change under a running worker (auto_reload off; overrides are named by content).
    templates: dict[str, tuple[Template, Template, Template]] = field(default_factory=dict)


TENANTS_KEPT = 1024  # tenant objects whose parts are kept; more (tenants changed often) start the cache again
# Locale choices kept per tenant: its languages x the regions its recipients name x its templates;
# a recipient's locale is event data, so only tags of a real tag's length are kept, and no more.
LOCALES_KEPT = 1024
_SMALL_TAG = 64
# Template triples kept per tenant: its triggers x languages, a few hundred at most in the packs.
TEMPLATES_KEPT = 1024


class Renderer:
    def __init__(
        self, templates_dir: Path, *, unsubscribe_tokens: TokenSigner | None = None, budget: RenderBudget | None = None
    ) -> None:
        self.templates_dir = templates_dir
        # Per mail; a deployment sets it with TIDINGS_RENDER_* (RenderBudget.from_settings).
        self.budget = budget if budget is not None else RenderBudget()
        # Signs the one-click unsubscribe links; without it (previews, tools) only a mailto is offered.
        self.unsubscribe_tokens = unsubscribe_tokens
        self.env = build_environment(templates_dir)
        # Style rules become style attributes; skipped for HTML with nothing to inline (css.py).
        self._inliner = StyleInliner(p.read_text(encoding="utf-8") for p in sorted((templates_dir / "_layouts").glob("*.html")))
        self._locales: dict[tuple[str, str], frozenset[str]] = {}
        self._tenants: dict[int, _TenantParts] = {}
        # Babel reads a language's CLDR data on its first use: tens of milliseconds of CPU that
        # would otherwise fall inside the first mail of each language, under its CPU budget.
        warm_locales(p.name for p in templates_dir.glob("*/*/*") if p.is_dir())

    def locales_of(self, pack: str, template: str) -> frozenset[str]:
        """Languages with a complete template set for this trigger mail (cached per worker)."""
        key = (pack, template)
        if key not in self._locales:
            folder = self.templates_dir / pack / template
            found = (
                frozenset(d.name for d in folder.iterdir() if d.is_dir() and all((d / p).is_file() for p in PARTS))
                if folder.is_dir()
                else frozenset()
            )
            self._locales[key] = found
        return self._locales[key]

    def _parts_of(self, tenant: Tenant) -> _TenantParts:
        parts = self._tenants.get(id(tenant))
        if parts is None or parts.tenant is not tenant:
            if len(self._tenants) >= TENANTS_KEPT:
                self._tenants.clear()
            parts = self._tenants[id(tenant)] = _TenantParts(tenant, tenant.brand.model_dump(), single_line(tenant.sender.from_name))
        return parts

    def render(
        self, firing: Firing, tenant: Tenant, record: Mapping[str, Any], source: Source, now: dt.datetime
    ) -> Rendered:
        recipient = firing.recipient
        try:
            to_address = sendable(str(recipient["email"]))
        except AddressError as e:
            raise InvalidRecipient(f"{firing.mail.role} address cannot be sent to: {e}") from None
        pack, template = firing.trigger.pack, firing.mail.template
        kept = self._parts_of(tenant)
        requested = recipient.get("locale")
        key = (requested, pack, template) if requested is None or (type(requested) is str and len(requested) <= _SMALL_TAG) else None
        chosen = kept.locales.get(key) if key is not None else None
        if chosen is None:
            overrides = kept.overrides.get((pack, template))
            if overrides is None:
                overrides = kept.overrides[(pack, template)] = _override_locales(tenant, pack, template)
            available = self.locales_of(pack, template) | overrides
            locale, fallback = choose_locale(requested, tenant.languages, tenant.default_language, available)
            chosen = (locale, fallback, format_locale(requested, locale, tenant.default_language))
            if key is not None and len(kept.locales) < LOCALES_KEPT:
                kept.locales[key] = chosen
        locale, fallback, formats = chosen
        context = {
            **record,
            "recipient": recipient,
            "brand": kept.brand,
            "locale": locale,
            "format_locale": formats,
            "time_zone": _zone_or(recipient.get("time_zone"), tenant.time_zone),
        }
        base = f"{pack}/{template}/{locale}"
        subject, html, text = self._parts(tenant, base, context, kept)
        attachments: list[dict[str, str]] = []
        if firing.mail.attachments:  # their file names are templates, under a meter of their own
            with metered(self.budget):
                attachments = self._attachments(firing, context, base)
        try:
            html = part_check(self.budget, "body.html", self._inliner.inline(html))
        except BudgetExceeded as e:
            raise RenderFailed(f"{base}/body.html: {e}") from None
        except ValueError as e:  # css_inline raises on CSS it cannot parse
            raise RenderFailed(f"{base}/body.html: CSS could not be inlined: {e}") from None
        subject = single_line(subject)
        if not subject:
            raise RenderFailed(f"{base}/subject.txt renders empty")
        tags = kept.tags.get((pack, firing.trigger.id))
        if tags is None:
            tags = kept.tags[(pack, firing.trigger.id)] = ses_tags(tenant.tenant_id, pack, firing.trigger.id)
        outbound = {
            "message_id": firing.message_id,
            "tenant_id": tenant.tenant_id,
            "pack": pack,
            "trigger": firing.trigger.id,
            "entity_id": firing.entity_id,
            "locale": locale,
            "from_address": tenant.sender.from_address,
            "from_name": kept.from_name,
            "reply_to": tenant.sender.reply_to,
            "to_address": to_address,
            "to_name": single_line(str(recipient.get("name") or "")),
            "subject": subject,
            "html": html,
            "text": text,
            "headers": self._headers(tenant, f"{pack}/{firing.trigger.id}", firing.trigger.rule.transactional, to_address),
            "attachments": attachments,
            "priority": firing.trigger.rule.priority,
            "transactional": firing.trigger.rule.transactional,
            "tags": dict(tags),  # a dict of the mail's own
            "source_event_id": source.event_id,
            "source_topic": source.topic,
            "source_timestamp": source.timestamp,
            "created_at": now,
        }
        return Rendered(outbound, fallback)

    def _parts(self, tenant: Tenant, base: str, context: Mapping[str, Any], kept: _TenantParts) -> tuple[str, str, str]:
        """The three parts: compiled first (outside the meter: compiling costs what the template's size
        allows, once per worker), then rendered under the active meter; any failure is this mail's ``RenderFailed``."""
        part = PARTS[0]
        try:
            templates = kept.templates.get(base)
            if templates is None:
                found = []
                for part in PARTS:
                    found.append(self._template(tenant, f"{base}/{part}"))
                templates = (found[0], found[1], found[2])
                if len(kept.templates) < TEMPLATES_KEPT:
                    kept.templates[base] = templates
            with metered(self.budget):
                out = []
                # What Template.render does, with the variables copied under the globals once per
                # mail instead of twice per part (the parts' globals are the environment's).
                variables: dict[str, Any] = {}
                made_from = None
                for part, template in zip(PARTS, templates, strict=True):
                    if template.globals != made_from:
                        made_from = template.globals
                        variables = {**made_from, **context}
                    text = self.env.concat(template.root_render_func(template.new_context(variables, shared=True)))
                    out.append(part_check(self.budget, part, text))
        except BudgetExceeded as e:
            raise RenderFailed(f"{base}/{part}: {e}") from None
        except TemplateError as e:
            lineno = getattr(e, "lineno", None)  # only TemplateSyntaxError and its kin carry one
            where = f" line {lineno}" if lineno else ""
            raise RenderFailed(f"{base}{where}: {type(e).__name__}: {e.message}") from None
        except RecursionError:
            raise RenderFailed(f"{base}/{part}: nested too deeply to compile or render") from None
        except Exception as e:  # a tenant template can raise anything (ZeroDivisionError ...)
            raise RenderFailed(f"{base}: {type(e).__name__} while rendering") from None
        subject, html, text = out
        return subject, html, text

    def _headers(self, tenant: Tenant, trigger: str, transactional: bool, to_address: str) -> dict[str, str]:
        headers = {"X-Tidings-Trigger": trigger, "X-Tidings-Tenant": tenant.tenant_id}
        if tenant.sender.configuration_set:
            headers[CONFIGURATION_SET_HEADER] = tenant.sender.configuration_set
        if not transactional:
            headers.update(unsubscribe_headers(tenant, to_address, self.unsubscribe_tokens))
        return headers

    def _template(self, tenant: Tenant, key: str) -> Template:
        """The tenant's own template for ``key`` if it has one, else the pack's file."""
        source = tenant.templates.get(key)
        if source is None:
            return self.env.get_template(key)
        loader = self.env.loader
        assert isinstance(loader, OverrideLoader)
        return self.env.get_template(loader.register(tenant.tenant_id, key, source))

    def _attachments(self, firing: Firing, context: Mapping[str, Any], base: str) -> list[dict[str, str]]:
        out = []
        for rule in firing.mail.attachments:
            uri: Any = context
            for step in rule.uri.split("."):
                uri = uri.get(step) if isinstance(uri, Mapping) else None
            if not uri:
                continue
            if not isinstance(uri, str) or not uri.startswith("s3://") or "/" not in uri[5:]:
                raise RenderFailed(f"{base}: attachment {rule.uri} is not an s3://bucket/key URI")
            try:
                filename = single_line(self.env.from_string(rule.filename).render(context)).replace("/", "-")
            except TemplateError as e:
                raise RenderFailed(f"{base}: attachment file name: {e.message}") from None
            except BudgetExceeded as e:
                raise RenderFailed(f"{base}: attachment file name: {e}") from None
            out.append({"uri": uri, "filename": filename or "attachment", "content_type": rule.content_type})
        return out
