"""The merge tags of each trigger: what its templates receive, and the reference page built from it.

A template of an *event* trigger renders with the event record's fields at the top level; one of
a *timed* trigger with the entity's state (the fields its pack copies or sets, see
``EntityUpdate``) plus ``timer`` (``streams/triggers/firing.py``'s ``timed_context``). Both get
what ``Renderer.render`` adds to every mail (``recipient``, ``brand``, ``locale``,
``format_locale``, ``time_zone``). This module describes that context as a tree of ``Var``
values, built from the newest version of the events' Avro schemas, the packs' entity updates and
the ``Brand`` model, so the lint (``streams/tools/lint.py``) and the reference page agree by
construction.

    python -m streams.rendering.merge_tags            writes docs/merge-tags.md
    python -m streams.rendering.merge_tags --check    exits 1 when docs/merge-tags.md is stale
"""

from __future__ import annotations

import argparse
import builtins
import datetime as dt
import json
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from fastavro.schema import expand_schema
from jinja2.defaults import DEFAULT_FILTERS

from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import PACKS_DIR, Catalog, EntitySpec, EventRule, TimedRule, Trigger
from streams.domain.tenants import Brand
from streams.rendering.environment import build_environment
from streams.settings import REPO_ROOT

REFERENCE_PATH = REPO_ROOT / "docs" / "merge-tags.md"
RECIPIENT_TYPE = "tidings.common.Recipient"

Kind = Literal["record", "map", "array", "union", "scalar"]

# Avro primitive -> (shown type, Python type of the decoded value).
_PRIMITIVES: dict[str, tuple[str, type]] = {
    "string": ("string", str),
    "int": ("int", int),
    "long": ("long", int),
    "float": ("float", float),
    "double": ("double", float),
    "boolean": ("boolean", bool),
    "bytes": ("bytes", bytes),
    "null": ("null", type(None)),
}
_LOGICAL: dict[str, tuple[str, type]] = {
    "date": ("date", dt.date),
    "timestamp-millis": ("timestamp (UTC)", dt.datetime),
    "timestamp-micros": ("timestamp (UTC)", dt.datetime),
    "local-timestamp-millis": ("local timestamp", dt.datetime),
    "local-timestamp-micros": ("local timestamp", dt.datetime),
    "time-millis": ("time", dt.time),
    "time-micros": ("time", dt.time),
    "decimal": ("decimal", Decimal),
    "uuid": ("uuid string", str),
}

# What Renderer.render adds to every mail besides ``recipient`` and ``brand`` (streams/rendering/render.py).
_RENDER_CONTEXT_DOCS = {
    "recipient": "The person this mail goes to: the record the mail rule's `recipient` field names.",
    "brand": "The tenant's brand (deploy/tenants/<tenant>.yaml, `brand:`).",
    "locale": "The language the mail is rendered in: the template folder's name (de, en, fr, nl).",
    "format_locale": "Locale of dates and money: the recipient's region when it speaks the mail's language (en-GB), else `locale`.",
    "time_zone": "IANA zone timestamps are shown in: the recipient's `time_zone`, else the tenant's.",
}
_BRAND_DOCS = {
    "name": "Operator name as shown in mails.",
    "logo_url": "Logo shown in the HTML header; null means the name is shown instead.",
    "primary_color": "Header and button colour (#rrggbb).",
    "accent_color": "Accent colour: the footer rule, quotes (#rrggbb).",
    "postal_address": "Postal address in the footer; may be empty.",
    "support_email": "Support address shown in the footer; may be null.",
    "footer": "Legal line at the end of the footer; may be empty.",
}
_FILTER_DOCS = {
    "date": "`{{ move_in_date | date }}`, `{{ starts_at | date('short') }}`: a date or timestamp in "
    "`format_locale` (Babel: short, medium, long, full or a CLDR pattern); timestamps in `time_zone`.",
    "money": "`{{ monthly_price | money }}`: a `tidings.common.Money` in `format_locale` (19,99 €).",
}


@dataclass(frozen=True)
class Var:
    """One variable of the render context, or one field inside one."""

    kind: Kind
    type: str
    doc: str = ""
    python: builtins.type | None = None  # scalars: the Python type of the value a template sees
    fields: Mapping[str, Var] = field(default_factory=dict)  # records
    inner: Var | None = None  # array items, map values
    branches: tuple[Var, ...] = ()  # unions: the non-null branches
    optional: bool = False
    secret: bool = False


def avro_var(schema: Any, doc: str = "", named: Mapping[str, Any] | None = None, *, secret: bool = False) -> Var:
    """The ``Var`` of an expanded Avro type (a ``fastavro.schema.expand_schema`` result)."""
    named = named or {}
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            shown, python = _PRIMITIVES[schema]
            return Var("scalar", shown, doc, python=python, secret=secret)
        return avro_var(named[schema], doc, named, secret=secret)
    if isinstance(schema, list):
        branches = tuple(avro_var(b, doc, named, secret=secret) for b in schema if b != "null")
        optional = "null" in schema
        if len(branches) == 1:
            only = branches[0]
            return replace(only, type=f"{only.type} or null" if optional else only.type, optional=optional)
        shown = " | ".join(b.type for b in branches) + (" | null" if optional else "")
        return Var("union", shown, doc, branches=branches, optional=optional, secret=secret)
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical in _LOGICAL:
        shown, python = _LOGICAL[logical]
        return Var("scalar", shown, doc, python=python, secret=secret)
    if kind == "record":
        fields = {
            f["name"]: avro_var(f["type"], f.get("doc", ""), named, secret=f.get("secret") is True)
            for f in schema["fields"]
        }
        return Var("record", schema["name"].rsplit(".", 1)[-1], doc, fields=fields, secret=secret)
    if kind == "enum":
        return Var("scalar", f"enum ({', '.join(schema['symbols'])})", doc, python=str, secret=secret)
    if kind == "fixed":
        return Var("scalar", "bytes", doc, python=bytes, secret=secret)
    if kind == "array":
        items = avro_var(schema["items"], "", named)
        return Var("array", f"list of {items.type}", doc, inner=items, secret=secret)
    if kind == "map":
        values = avro_var(schema["values"], "", named)
        return Var("map", f"map of {values.type}", doc, inner=values, secret=secret)
    return avro_var(kind, doc, named, secret=secret)


def _expand_named(schema: Any) -> dict[str, Any]:
    """``expand_schema`` of a named type (a record, enum or fixed: a JSON object)."""
    expanded = expand_schema(schema)
    if not isinstance(expanded, dict):
        raise TypeError(f"expected a named Avro type, got {type(expanded).__name__}")
    return expanded


def _expanded(schemas: SchemaRepository, name: str) -> tuple[dict[str, Any], Mapping[str, Any]]:
    parsed = schemas.latest(name).parsed
    return _expand_named(parsed), parsed.get("__named_schemas", {})


def event_context(schemas: SchemaRepository, event: str) -> dict[str, Var]:
    """The event's top-level fields (newest schema version), as templates see them."""
    expanded, named = _expanded(schemas, event)
    return dict(avro_var(expanded, named=named).fields)


def _python_var(annotation: Any, doc: str) -> Var:
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        base = _python_var(inner[0], doc)
        return Var("scalar", f"{base.type} or null", doc, python=base.python, optional=True)
    shown = {str: "string", int: "int", bool: "boolean", float: "float"}.get(annotation, getattr(annotation, "__name__", "value"))
    return Var("scalar", shown, doc, python=annotation if isinstance(annotation, type) else None)


def brand_var() -> Var:
    fields = {
        name: _python_var(info.annotation, info.description or _BRAND_DOCS.get(name, ""))
        for name, info in Brand.model_fields.items()
    }
    return Var("record", "Brand", _RENDER_CONTEXT_DOCS["brand"], fields=fields)


def common_context(schemas: SchemaRepository) -> dict[str, Var]:
    """What every mail receives besides the event's fields (these win over event fields of the same name)."""
    recipient, named = _shared_type(schemas, RECIPIENT_TYPE)
    return {
        "recipient": avro_var(recipient, _RENDER_CONTEXT_DOCS["recipient"], named),
        "brand": brand_var(),
        **{
            name: Var("scalar", "string", _RENDER_CONTEXT_DOCS[name], python=str)
            for name in ("locale", "format_locale", "time_zone")
        },
    }


def _shared_type(schemas: SchemaRepository, name: str) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """A shared named type (``schemas/common/``) is no versioned record of its own: take it from an event using it."""
    for version in schemas:
        named = version.parsed.get("__named_schemas", {})
        if name in named:
            return _expand_named(named[name]), named
    raise KeyError(f"no schema uses {name}")


def trigger_context(schemas: SchemaRepository, catalog: Catalog, trigger: Trigger) -> dict[str, Var]:
    """Everything a template of the trigger may use (the render context's shape)."""
    rule = trigger.rule
    if isinstance(rule, EventRule):
        return {**event_context(schemas, rule.event), **common_context(schemas)}
    return {**timed_context_vars(schemas, catalog, trigger), **common_context(schemas)}


# ---- timed triggers: entity state and timer -------------------------------------------------

_TIMER_DOCS = {
    "due_at": "When the mail was due (UTC; the `date` filter shows it in `time_zone`): the send time on the day a date "
    "trigger names, the end of an absence window, the appointment time minus the offset.",
    "step": "Which step of a trigger with `steps` this mail is (1, 2, 3 ...: word each one more firmly); 0 otherwise.",
    "steps": "How many steps the trigger has (the tenant's `steps` when set); 0 for a trigger without steps.",
    "params": "The trigger's parameters as in effect for the tenant (its own figures where it set them).",
}
_UNIT_DOCS = {
    "days": "The \"x days\" of the trigger, a positive whole number (before or after is the trigger's direction).",
    "hours": "The \"x hours\" of the trigger, a positive whole number (before or after is the trigger's direction).",
    "minutes": "The \"x minutes\" of the trigger's window, a positive whole number.",
}
_LITERAL_TYPES: dict[type, str] = {str: "string", bool: "boolean", int: "int", float: "float"}


def entity_of(catalog: Catalog, trigger: Trigger) -> EntitySpec:
    """The entity a timed trigger follows."""
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    return catalog.entity(f"{trigger.pack}.{rule.entity}")


def var_at(var: Var, steps: tuple[str, ...]) -> Var | None:
    """The ``Var`` at a dotted path below ``var`` (through the branches of unions), or None."""
    if not steps:
        return var
    step, rest = steps[0], steps[1:]
    for branch in var.branches or (var,):
        if branch.kind == "record" and step in branch.fields:
            found = var_at(branch.fields[step], rest)
            if found is not None:
                # A field inside an optional record is absent whenever the record is.
                return replace(found, type=_or_null(found), optional=True) if var.optional and not found.optional else found
    return None


def _or_null(var: Var) -> str:
    return var.type if var.optional else f"{var.type} or null"


def _literal_var(value: Any) -> Var:
    if value is None:
        return Var("scalar", "null", python=type(None), optional=True)
    return Var("scalar", _LITERAL_TYPES.get(type(value), type(value).__name__), python=type(value))


def _merge(sources: list[tuple[Var, str]]) -> Var:
    """One state field written by several events or literals: their common type, optional if any source is."""
    optional = any(v.optional for v, _ in sources)
    kinds = {v.type.removesuffix(" or null") for v, _ in sources if v.type != "null"}
    present = [v for v, _ in sources if v.type != "null"]
    docs = [v.doc for v in present if v.doc]
    origin = ", ".join(dict.fromkeys(where for _, where in sources))
    doc = f"{docs[0]} From {origin}." if docs else f"Set by the pack: {origin}."
    secret = any(v.secret for v, _ in sources)
    if len(kinds) <= 1 and present:
        base = next((v for v in present if not v.optional), present[0])
        shown = base.type.removesuffix(" or null")
        return replace(base, type=f"{shown} or null" if optional else shown, doc=doc, optional=optional, secret=secret)
    if not present:
        return Var("scalar", "null", doc, python=type(None), optional=True)
    branches = tuple(replace(v, optional=False, type=v.type.removesuffix(" or null")) for v in present)
    shown = " | ".join(dict.fromkeys(b.type for b in branches)) + (" | null" if optional else "")
    return Var("union", shown, doc, branches=branches, optional=optional, secret=secret)


def state_context(schemas: SchemaRepository, spec: EntitySpec) -> dict[str, Var]:
    """The fields of an entity's state as templates see them, typed from what writes them.

    A ``copy``/``copy_once`` target takes the type of the event field it copies (newest schema
    version; union of types when several events write it), a ``set`` target the type of its
    literal. A field is absent until an event that writes it has arrived, and null where a
    source may be null or a ``set`` clears it.
    """
    sources: dict[str, list[tuple[Var, str]]] = {}
    for type_name in spec.events:
        short = type_name.rsplit(".", 1)[-1]
        event = Var("record", short, fields=event_context(schemas, type_name)) if schemas.has(type_name) else None
        for update in spec.updates(type_name):
            for once in (False, True):
                for target, path in update.copies(once).items():
                    var = var_at(event, tuple(path.split("."))) if event is not None else None
                    if var is not None:
                        sources.setdefault(target, []).append((var, f"`{short}.{path}`"))
            for target, value in update.set.items():
                sources.setdefault(target, []).append((_literal_var(value), f"`{_literal(value)}` on `{short}`"))
    return {name: _merge(found) for name, found in sources.items()}


def timer_var(rule: TimedRule) -> Var:
    """``timer`` as ``timed_context`` builds it: due time, step, step count and effective parameters."""
    params: dict[str, Var] = {}
    for span in (rule.offset, rule.window):
        if span is not None:
            params[span.unit] = Var("scalar", "int", _UNIT_DOCS[span.unit], python=int)
    if rule.steps is not None:
        shown = ", ".join(map(str, rule.steps))
        params["steps"] = Var(
            "array", "list of int", f"Days after `{rule.at}` of each step (the pack's are {shown}).",
            inner=Var("scalar", "int", python=int),
        )
    for name, default in rule.params.items():
        doc = f"Parameter `${name}` of the trigger's condition (the pack's default: {_literal(default)})."
        params[name] = replace(_literal_var(default), doc=doc)
    fields = {
        "due_at": Var("scalar", "timestamp (UTC)", _TIMER_DOCS["due_at"], python=dt.datetime),
        "step": Var("scalar", "int", _TIMER_DOCS["step"], python=int),
        "steps": Var("scalar", "int", _TIMER_DOCS["steps"], python=int),
        "params": Var("record", "Params", _TIMER_DOCS["params"], fields=params),
    }
    return Var("record", "Timer", "The timer that fired this mail.", fields=fields)


def timed_context_vars(schemas: SchemaRepository, catalog: Catalog, trigger: Trigger) -> dict[str, Var]:
    """A timed trigger's own variables: the entity state's fields and ``timer``."""
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    return {**state_context(schemas, entity_of(catalog, trigger)), "timer": timer_var(rule)}


def is_attribute(python: type | None, step: str | int) -> bool:
    """Whether ``value.step`` on a value of this Python type is a public attribute (``.get``, ``.year``, ``.upper``)."""
    return python is not None and isinstance(step, str) and not step.startswith("_") and hasattr(python, step)


def resolves(var: Var, steps: tuple[str | int, ...]) -> bool:
    """Whether the path ``steps`` below ``var`` names something a render can have.

    Records take their field names (and, being dicts at render time, dict methods such as
    ``get``); a union is fine when any branch takes the path; maps take any key; arrays take
    integer indexes (loop targets are local variables and not followed); scalars take their Python
    attributes (``starts_at.year``, ``name.upper``).
    """
    if not steps:
        return True
    step, rest = steps[0], steps[1:]
    if var.kind == "union":
        return any(resolves(branch, steps) for branch in var.branches)
    if var.kind == "record":
        if step in var.fields:
            return resolves(var.fields[str(step)], rest)
        return is_attribute(dict, step)
    if var.kind == "map":
        return is_attribute(dict, step) or (var.inner is not None and resolves(var.inner, rest))
    if var.kind == "array":
        if isinstance(step, int):
            return var.inner is not None and resolves(var.inner, rest)
        return is_attribute(list, step)
    if isinstance(step, int):
        return var.python in (str, bytes)
    return is_attribute(var.python, step)


def flatten(context: Mapping[str, Var]) -> Iterator[tuple[str, Var]]:
    """Every variable as a dotted path (``customer.name``; list items as ``lines[].amount``), depth first."""
    for name, var in context.items():
        yield name, var
        yield from _flatten_below(name, var)


def _flatten_below(path: str, var: Var) -> Iterator[tuple[str, Var]]:
    for branch in var.branches or (var,):
        if branch.kind == "record":
            for name, child in branch.fields.items():
                yield f"{path}.{name}", child
                yield from _flatten_below(f"{path}.{name}", child)
        elif branch.kind == "array" and branch.inner is not None:
            yield from _flatten_below(f"{path}[]", branch.inner)
        elif branch.kind == "map" and branch.inner is not None:
            yield from _flatten_below(f"{path}[key]", branch.inner)


# ---- the reference page ----------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(rows: list[tuple[str, Var]]) -> list[str]:
    out = ["| variable | type | description |", "|---|---|---|"]
    for path, var in rows:
        doc = ("**Secret**: reaches this mail only. " if var.secret else "") + var.doc
        out.append(f"| `{path}` | {_cell(var.type)} | {_cell(doc)} |")
    return out


def reference(schemas: SchemaRepository, catalog: Catalog) -> str:
    """The Markdown of docs/merge-tags.md: a pure function of the schemas and the packs."""
    custom_filters = sorted(n for n in build_environment(REPO_ROOT / "templates").filters if n not in DEFAULT_FILTERS)
    common = common_context(schemas)
    lines = [
        "# Merge tags",
        "",
        "<!-- Generated by `python -m streams.rendering.merge_tags` from schemas/ and streams/packs/; do not edit. -->",
        "",
        "What each trigger's templates may use. A template of an event trigger receives the fields of its",
        "event (the newest schema version) at the top level; one of a timed trigger (date, relative,",
        "absence, recurring) receives the fields of the entity's state that its pack copies or sets, and",
        "`timer`. Both receive the variables every mail receives. Nested fields are written as dotted",
        "paths (`customer.name`); a `null` type means the field may be absent, so test it first",
        "(`{% if move_out_date %}`). `make lint` checks every template against these tables.",
        "",
        "## Every mail",
        "",
        *_table(list(flatten(common))),
        "",
        "Filters besides Jinja2's built-ins:",
        "",
        *(f"- `{name}`: {_FILTER_DOCS.get(name, '')}" for name in custom_filters),
        "",
    ]
    for pack_name in sorted(catalog.packs):
        pack = catalog.packs[pack_name]
        lines += [f"## Pack `{pack_name}`", "", f"Languages: {', '.join(pack.languages)}.", ""]
        for trigger_id, rule in pack.triggers.items():
            if isinstance(rule, TimedRule):
                lines += _timed_section(schemas, catalog, Trigger(pack_name, trigger_id, rule))
                continue
            version = schemas.latest(rule.event)
            record_doc = _expand_named(version.parsed).get("doc", "")
            on = "on" if rule.enabled_by_default else "off"
            lines += [
                f"### `{pack_name}/{trigger_id}`",
                "",
                f"Event `{rule.event}` (v{version.version}, `schemas/{version.group}/{version.path.name}`): "
                f"{_cell(record_doc)}",
                "",
                f"Entity: `{rule.entity}`. Default for tenants: {on}.",
                "",
                *_mails_table(pack_name, rule),
                "",
                *_table(list(flatten(event_context(schemas, rule.event)))),
                "",
            ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _mails_table(pack: str, rule: EventRule | TimedRule) -> list[str]:
    return [
        "| role | recipient | template |",
        "|---|---|---|",
        *(f"| {mail.role} | `{mail.recipient}` | `templates/{pack}/{mail.template}/<language>/` |" for mail in rule.mails),
    ]


def _span_text(span: Any) -> str:
    amount = abs(span.amount)
    return f"{amount} {span.unit[:-1] if amount == 1 else span.unit}"


def when_text(rule: TimedRule) -> str:
    """When a timed trigger fires, in one sentence (its parameters are the pack's defaults)."""
    at = f"`{rule.at}`"
    if rule.kind == "date":
        text = f"on the date in {at}, at the send time"
    elif rule.kind == "relative" and rule.steps is not None:
        text = f"{', '.join(map(str, rule.steps))} days after {at} (one mail per step), at the send time"
    elif rule.kind == "relative":
        assert rule.offset is not None
        side = "before" if rule.offset.amount < 0 else "after"
        text = f"{_span_text(rule.offset)} {side} {at}" + (", at the send time" if rule.offset.unit == "days" else "")
    elif rule.kind == "absence":
        assert rule.window is not None
        text = f"when {_span_text(rule.window)} pass after {at} without a newer one"
        if rule.confirmed_by:
            text += f", or as soon as `{rule.confirmed_by}` confirms it"
    else:
        text = f"every {str(rule.weekday).capitalize()} at the send time"
    if rule.when:
        conditions = ", ".join(f"`{path}` {_test_text(test)}" for path, test in rule.when.items())
        text += f", while {conditions}"
    return text


_OPERATORS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "ne": "!=", "in": "in"}


def _test_text(test: Any) -> str:
    if not isinstance(test, Mapping):
        return f"= `{_literal(test)}`"
    return " and ".join(
        ("is set" if value else "is not set") if op == "present" else f"{_OPERATORS.get(op, op)} `{_literal(value)}`"
        for op, value in test.items()
    )


def _literal(value: Any) -> str:
    """A pack value as written in YAML (``true``, ``null``, ``active``, ``$min_slots``)."""
    return value if isinstance(value, str) else json.dumps(value)


def _timed_section(schemas: SchemaRepository, catalog: Catalog, trigger: Trigger) -> list[str]:
    rule = trigger.rule
    assert isinstance(rule, TimedRule)
    spec = entity_of(catalog, trigger)
    fed_by = ", ".join(f"`{name}`" for name in spec.events)
    on = "on" if rule.enabled_by_default else "off"
    return [
        f"### `{trigger.key}`",
        "",
        f"Timed ({rule.kind}): fires {when_text(rule)}; no later than {_span_text(rule.grace)} after that.",
        "",
        f"Entity: `{trigger.pack}.{rule.entity}` (keyed by `{spec.id}`), its state written by {fed_by}. "
        f"Default for tenants: {on}.",
        "",
        *_mails_table(trigger.pack, rule),
        "",
        *_table(list(flatten(timed_context_vars(schemas, catalog, trigger)))),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.rendering.merge_tags", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REFERENCE_PATH, help="where to write (default docs/merge-tags.md)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = reference(SchemaRepository.load(REPO_ROOT / "schemas"), Catalog.load(PACKS_DIR))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m streams.rendering.merge_tags", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
