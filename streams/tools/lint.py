"""Template lint: every mail a pack or an example tenant can send has its templates, they compile,
and they use only merge tags, filters and blocks that exist.

Checks, each reported as ``file:line: problem``:

- every mail of every trigger has ``subject.txt``, ``body.html`` and ``body.txt`` in every language
  of its pack, and in every language an example tenant offers for each trigger it has on;
- every template file (and every language folder present, used or not) parses and compiles;
- every variable a template reads exists for its trigger (``streams/rendering/merge_tags.py``:
  the event schema's fields for an event trigger, the entity state's fields and ``timer`` for a
  timed one, plus ``recipient``, ``brand``, ``locale`` ...), nested paths included
  (``customer.nmae`` fails); names a template sets itself (``set``, ``for``) are its own business;
- every filter and test exists in the rendering environment; every block a template defines
  exists in the layout it extends; the layouts use only what every mail receives;
- a pack's attachment file names are templates too; an event trigger's entity, recipient and
  attachment fields are paths of its event; a timed trigger's date, condition, recipient and
  attachment fields are fields of its entity's state; an entity's id, copied and ``if`` fields
  are paths of each event that feeds it, and each of those events has a schema.

Pure: reads files, renders nothing, needs no broker. ``python -m streams.tools.lint`` prints
the problems and exits 1, or prints one line of counts and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import PACKS_DIR, Catalog, EntitySpec, EventRule, PackFile, TimedRule, Trigger
from streams.domain.tenants import load_tenant
from streams.errors import ConfigurationError
from streams.rendering.checks import LAYOUTS, Problem, Show, TemplateChecker
from streams.rendering.environment import build_environment
from streams.rendering.merge_tags import Var, common_context, event_context, resolves, trigger_context
from streams.rendering.render import PARTS
from streams.settings import REPO_ROOT
from streams.tenants.validate import safe_pack_problems


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    templates: int = 0  # distinct template files checked
    tags: int = 0  # merge-tag uses checked (one per use per trigger)
    tenants: int = 0
    triggers: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"lint: {self.templates} templates of {self.triggers} triggers and {self.tenants} example tenants, "
            f"{self.tags} merge tags checked, no problems"
        )


def _pack_templates_used_by(path: Path, templates_dir: Path, env: SandboxedEnvironment) -> list[Path]:
    """Template files ``path`` extends, includes or imports, transitively, except the brand layouts
    (checked on their own with what every mail receives)."""
    found: list[Path] = []
    todo = [path]
    while todo:
        current = todo.pop()
        try:
            ast = env.parse(current.read_text(encoding="utf-8"))
        except (TemplateSyntaxError, OSError):
            continue  # reported where the file itself is checked
        for name in meta.find_referenced_templates(ast):
            if not name or name.startswith(f"{LAYOUTS}/"):
                continue
            target = templates_dir / name
            if target.is_file() and target not in found:
                found.append(target)
                todo.append(target)
    return found


def _line_of(path: Path, needle: str) -> int:
    """1-based line of the first occurrence of ``needle`` in a file; 0 when absent."""
    try:
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if needle in text:
                return number
    except OSError:
        pass
    return 0


def _yaml_key_line(path: Path, key: str) -> int:
    """1-based line of a top-level key's value in a YAML file; 0 when absent."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return 0
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if k.value == key:
                return int(v.start_mark.line) + 1
    return 0


def lint(
    *,
    templates_dir: Path = REPO_ROOT / "templates",
    schemas_dir: Path = REPO_ROOT / "schemas",
    packs_dir: Path = PACKS_DIR,
    tenants_dir: Path = REPO_ROOT / "deploy" / "tenants",
    root: Path = REPO_ROOT,
) -> Report:
    show = Show(root)
    report = Report()
    try:
        schemas = SchemaRepository.load(schemas_dir)
        catalog = Catalog.load(packs_dir)
    except ConfigurationError as e:
        report.problems.append(Problem(show(packs_dir), 0, f"cannot load schemas or packs: {e}"))
        return report
    checker = TemplateChecker(build_environment(templates_dir), templates_dir, show)

    def check(path: Path, context: Mapping[str, Var], trigger: str | None) -> None:
        problems, tags = checker.check_file(path, context, trigger)
        report.problems.extend(problems)
        report.tags += tags

    common = common_context(schemas)
    for layout in sorted((templates_dir / LAYOUTS).glob("*")):
        if layout.is_file():
            check(layout, common, None)

    for pack in catalog.packs.values():
        pack_file = packs_dir / pack.pack / "pack.yaml"
        report.problems.extend(_entity_problems(pack, schemas, show(pack_file), pack_file))
        for trigger_id, rule in pack.triggers.items():
            trigger = Trigger(pack.pack, trigger_id, rule)
            key = trigger.key
            report.triggers += 1
            missing = [e for e in _events_of(trigger, catalog) if not schemas.has(e)]
            if missing:
                report.problems.extend(Problem(show(pack_file), _line_of(pack_file, e), f"{key}: no schema {e}") for e in missing)
                continue
            context = trigger_context(schemas, catalog, trigger)
            report.problems.extend(_rule_paths(trigger, context, show(pack_file), pack_file))
            for mail in rule.mails:
                for attachment in mail.attachments:
                    problems, tags = checker.check_string(
                        attachment.filename, show(pack_file), _line_of(pack_file, attachment.filename), context, key
                    )
                    report.problems.extend(problems)
                    report.tags += tags
                folder = templates_dir / pack.pack / mail.template
                present = {d.name for d in folder.iterdir() if d.is_dir()} if folder.is_dir() else set()
                for language in [*pack.languages, *sorted(present - set(pack.languages))]:
                    for part in PARTS:
                        path = folder / language / part
                        if path.is_file():
                            check(path, context, key)
                            # A pack's shared parts (templates/<pack>/_invoice/...) see the mail's
                            # context, so they are checked against every trigger that uses them.
                            for shared in _pack_templates_used_by(path, templates_dir, checker.env):
                                check(shared, context, key)
                        elif language in pack.languages:
                            report.problems.append(
                                Problem(show(path), 0, f"missing: {key} ({mail.role} mail) needs {part} in {language}, a language of pack {pack.pack}")
                            )

    for tenant_file in sorted(tenants_dir.glob("*.yaml")):
        report.tenants += 1
        report.problems.extend(_tenant_problems(tenant_file, catalog, templates_dir, show))

    report.templates = checker.files
    report.problems.sort()
    return report


def _events_of(trigger: Trigger, catalog: Catalog) -> list[str]:
    """The event types whose schemas a trigger's merge tags come from."""
    rule = trigger.rule
    if isinstance(rule, EventRule):
        return [rule.event]
    assert isinstance(rule, TimedRule)
    return list(catalog.entity(f"{trigger.pack}.{rule.entity}").events)


def _rule_paths(trigger: Trigger, context: Mapping[str, Var], file: str, pack_file: Path) -> Iterator[Problem]:
    """The fields a rule names must exist where the rule reads them.

    An event trigger's entity, recipients and attachment URIs are paths of its event; a timed
    trigger's date or instant (``at``, ``confirmed_by``), condition fields (``when``),
    recipients and attachment URIs are fields of its entity's state.
    """
    rule = trigger.rule
    named: list[tuple[str, str]] = []
    if isinstance(rule, EventRule):
        named.append(("entity", rule.entity))
        where = rule.event
    else:
        named += [(what, path) for what, path in (("at", rule.at), ("confirmed_by", rule.confirmed_by)) if path]
        named += [("condition field", path) for path in rule.when]
        where = f"the state of entity {trigger.pack}.{rule.entity}"
    for mail in rule.mails:
        named.append(("recipient", mail.recipient))
        named.extend(("attachment uri", a.uri) for a in mail.attachments)
    for what, path in named:
        head, *rest = path.split(".")
        var = context.get(head)
        if var is None or not resolves(var, tuple(rest)):
            yield Problem(file, _line_of(pack_file, path), f"{trigger.key}: {what} '{path}' is not a field of {where}")


def _entity_problems(pack: PackFile, schemas: SchemaRepository, file: str, pack_file: Path) -> Iterator[Problem]:
    """Each event feeding an entity has a schema, and the id, copied and ``if`` fields are its paths."""
    for name, spec in pack.entities.items():
        for event in spec.events:
            if not schemas.has(event):
                yield Problem(file, _line_of(pack_file, event), f"entity {pack.pack}.{name}: no schema {event}")
                continue
            context = event_context(schemas, event)
            for what, path in _entity_paths(spec, event):
                head, *rest = path.split(".")
                var = context.get(head)
                if var is None or not resolves(var, tuple(rest)):
                    yield Problem(
                        file, _line_of(pack_file, path), f"entity {pack.pack}.{name}: {what} '{path}' is not a field of {event}"
                    )


def _entity_paths(spec: EntitySpec, event: str) -> Iterator[tuple[str, str]]:
    yield "id", spec.id
    for update in spec.updates(event):
        for once in (False, True):
            yield from (("copied field", path) for path in update.copies(once).values())
        yield from (("if field", path) for path in update.when)


def _tenant_problems(tenant_file: Path, catalog: Catalog, templates_dir: Path, show: Show) -> Iterator[Problem]:
    """The checks ``tidings-tenants publish`` runs (``streams/tenants/validate.py``), with lines."""
    file = show(tenant_file)
    try:
        tenant = load_tenant(tenant_file)
    except ConfigurationError as e:
        yield Problem(file, 0, str(e).removeprefix(f"{tenant_file}: "))
        return
    for field_name, message in safe_pack_problems(tenant, catalog, templates_dir):
        if field_name.startswith("triggers."):
            line = _line_of(tenant_file, field_name.removeprefix("triggers."))
        else:
            line = _yaml_key_line(tenant_file, field_name)
        yield Problem(file, line, message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.tools.lint", description=__doc__.splitlines()[0])
    parser.add_argument("--templates", type=Path, default=REPO_ROOT / "templates")
    parser.add_argument("--tenants", type=Path, default=REPO_ROOT / "deploy" / "tenants")
    args = parser.parse_args(argv)
    report = lint(templates_dir=args.templates, tenants_dir=args.tenants)
    for problem in report.problems:
        print(problem)
    if not report.ok:
        print(f"lint: {len(report.problems)} problem(s)", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
