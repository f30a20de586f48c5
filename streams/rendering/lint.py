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

Pure: reads files, renders nothing, needs no broker. ``python -m streams.rendering.lint`` prints
the problems and exits 1, or prints one line of counts and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import yaml
from jinja2 import TemplateError, TemplateNotFound, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from streams.codecs.schemas import SchemaRepository
from streams.errors import ConfigurationError
from streams.rendering.environment import build_environment
from streams.rendering.merge_tags import Var, common_context, event_context, resolves, trigger_context
from streams.rendering.render import PARTS
from streams.settings import REPO_ROOT
from streams.tenants.model import load_tenant
from streams.tenants.validate import safe_pack_problems
from streams.triggers.rules import PACKS_DIR, Catalog, EntitySpec, EventRule, PackFile, TimedRule, Trigger

LAYOUTS = "_layouts"
Step = str | int


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong, where it is."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


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


@dataclass(frozen=True)
class _Use:
    """A context variable a template reads: its path as written and the line."""

    path: tuple[Step, ...]
    line: int

    @property
    def tag(self) -> str:
        return ".".join(str(s) for s in self.path)


@dataclass(frozen=True)
class _Parsed:
    uses: tuple[_Use, ...]
    problems: tuple[Problem, ...]  # problems independent of the trigger (syntax, filters, blocks)


class _TemplateChecker:
    """Parses each template once and checks its merge tags against any number of trigger contexts."""

    def __init__(self, env: SandboxedEnvironment, templates_dir: Path, show: _Show) -> None:
        self.env = env
        self.templates_dir = templates_dir
        self.show = show
        self._parsed: dict[Path, _Parsed] = {}
        self._reported: set[Problem] = set()

    @property
    def files(self) -> int:
        return len(self._parsed)

    def check_file(self, path: Path, context: Mapping[str, Var], trigger: str | None) -> tuple[list[Problem], int]:
        if path not in self._parsed:
            name = path.relative_to(self.templates_dir).as_posix()
            self._parsed[path] = self._parse(path.read_text(encoding="utf-8"), name, self.show(path), 0)
        parsed = self._parsed[path]
        return self._once(list(parsed.problems) + self._unknown(parsed, self.show(path), context, trigger)), len(parsed.uses)

    def check_string(
        self, source: str, file: str, line: int, context: Mapping[str, Var], trigger: str | None
    ) -> tuple[list[Problem], int]:
        """A template kept inside another file (an attachment's file name in pack.yaml, at ``line``)."""
        parsed = self._parse(source, None, file, line - 1)
        return self._once(list(parsed.problems) + self._unknown(parsed, file, context, trigger)), len(parsed.uses)

    def _once(self, problems: list[Problem]) -> list[Problem]:
        fresh = [p for p in problems if p not in self._reported]
        self._reported.update(fresh)
        return fresh

    def _unknown(self, parsed: _Parsed, file: str, context: Mapping[str, Var], trigger: str | None) -> list[Problem]:
        where = f" for trigger {trigger}" if trigger else " (layouts receive only what every mail receives)"
        out = []
        for use in parsed.uses:
            head, rest = use.path[0], use.path[1:]
            var = context.get(str(head))
            if var is None or not resolves(var, rest):
                out.append(Problem(file, use.line, f"unknown merge tag '{use.tag}'{where}"))
        return out

    def _parse(self, source: str, name: str | None, file: str, offset: int) -> _Parsed:
        """``_analyse``, which never raises: a tenant's text may be anything (the checks run on every record)."""
        try:
            return self._analyse(source, name, file, offset)
        except RecursionError:
            return _Parsed((), (Problem(file, offset, "nested too deeply to check (brackets, blocks or expressions)"),))
        except Exception as e:  # noqa: BLE001 - any failure of the checker is a problem of this text, never a crash
            return _Parsed((), (Problem(file, offset, f"cannot be checked: {type(e).__name__}: {str(e)[:200]}"),))

    def _analyse(self, source: str, name: str | None, file: str, offset: int) -> _Parsed:
        try:
            ast = self.env.parse(source, name, file)
        except TemplateSyntaxError as e:
            return _Parsed((), (Problem(file, (e.lineno or 0) + offset, f"syntax error: {e.message}"),))
        problems = [Problem(file, line + offset, msg) for line, msg in self._structure(ast)]
        env = self.env
        unknown_filters = {n.name for n in ast.find_all(nodes.Filter) if n.name not in env.filters}
        unknown_tests = {n.name for n in ast.find_all(nodes.Test) if n.name not in env.tests}
        if unknown_filters or unknown_tests:
            # Analyse the rest as if they existed, so one typo does not hide the others.
            env = self.env.overlay()
            env.filters = {**self.env.filters, **{n: _absent for n in unknown_filters}}
            env.tests = {**self.env.tests, **{n: _absent for n in unknown_tests}}
            ast = env.parse(source, name, file)
        else:
            try:
                self.env.compile(ast, name, file)
            except TemplateError as e:
                problems.append(Problem(file, (getattr(e, "lineno", None) or 0) + offset, f"does not compile: {e}"))
            except SyntaxError as e:  # Python's own limits on the compiled code (e.g. more than 20 nested loops)
                problems.append(Problem(file, offset, f"does not compile: {e.msg}"))
        from_context = meta.find_undeclared_variables(ast) - _stored_names(ast) - set(env.globals)
        uses = tuple(
            _Use(use.path, use.line + offset) for use in _uses(ast) if isinstance(use.path[0], str) and use.path[0] in from_context
        )
        return _Parsed(tuple(dict.fromkeys(uses)), tuple(problems))

    def _structure(self, ast: nodes.Template) -> Iterator[tuple[int, str]]:
        for filter_node in ast.find_all(nodes.Filter):
            if filter_node.name not in self.env.filters:
                yield filter_node.lineno, f"unknown filter '{filter_node.name}'"
        for test_node in ast.find_all(nodes.Test):
            if test_node.name not in self.env.tests:
                yield test_node.lineno, f"unknown test '{test_node.name}'"
        for found in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            # find_all of a tuple is typed as their common base (Stmt); each of these four has a template.
            node = cast(nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport, found)
            target = node.template
            if isinstance(target, nodes.Const) and isinstance(target.value, str):
                try:
                    self.env.loader.get_source(self.env, target.value)  # type: ignore[union-attr]  # build_environment sets a loader
                except TemplateNotFound:
                    yield node.lineno, f"template '{target.value}' does not exist"
                    continue
                if isinstance(node, nodes.Extends):
                    offered = self._blocks_of(target.value)
                    for block in _outer_blocks(ast):  # a block nested in another one is new, not an override
                        if block.name not in offered:
                            yield block.lineno, (
                                f"block '{block.name}' is not in {target.value} (it has {', '.join(sorted(offered)) or 'no blocks'})"
                            )

    def _blocks_of(self, name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """Blocks a layout defines, following its own ``extends``."""
        if name in seen:
            return set()
        try:
            source, filename, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]  # as above
            ast = self.env.parse(source, name, filename)
        except (TemplateNotFound, TemplateSyntaxError):
            return set()
        blocks = {b.name for b in ast.find_all(nodes.Block)}
        for parent in ast.find_all(nodes.Extends):
            if isinstance(parent.template, nodes.Const):
                blocks |= self._blocks_of(parent.template.value, seen | {name})
        return blocks


def _outer_blocks(node: nodes.Node) -> Iterator[nodes.Block]:
    """Blocks not inside another block: the ones that must exist in the layout extended."""
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Block):
            yield child
        else:
            yield from _outer_blocks(child)


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


def _absent(*args: object, **kwargs: object) -> None:
    """Stands in for a filter or test that does not exist, while the lint analyses the rest."""


def _stored_names(ast: nodes.Template) -> set[str]:
    """Names the template defines itself: ``set``, ``for`` targets, macro and call arguments, imports."""
    names = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    names |= {n.name for n in ast.find_all(nodes.Macro)}
    for node in ast.find_all(nodes.Import):
        names.add(node.target)
    for from_import in ast.find_all(nodes.FromImport):
        names.update(n if isinstance(n, str) else n[1] for n in from_import.names)
    return names


def _uses(node: nodes.Node) -> Iterator[_Use]:
    """Every variable read, with the longest constant attribute/index path after it.

    ``customer.name`` -> ("customer", "name"); ``monthly_price["currency"]`` -> ("monthly_price",
    "currency"); ``lines[i].amount`` -> ("lines",) plus the uses inside ``i``.
    """
    if isinstance(node, (nodes.Getattr, nodes.Getitem)):
        chain = _chain(node)
        if chain is not None:
            yield chain
            return
    if isinstance(node, nodes.Name) and node.ctx == "load":
        yield _Use((node.name,), node.lineno)
        return
    for child in node.iter_child_nodes():
        yield from _uses(child)


def _chain(node: nodes.Node) -> _Use | None:
    steps: list[Step] = []
    line = node.lineno
    while True:
        if isinstance(node, nodes.Getattr):
            steps.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, (str, int)):
            steps.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            return _Use((node.name, *reversed(steps)), line)
        else:
            return None


class _Show:
    """File names as the lint prints them: relative to the repository when inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def __call__(self, path: Path) -> str:
        resolved = path.resolve()
        return resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else str(path)


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


@functools.lru_cache(maxsize=4)
def _override_checker(templates_dir: Path, schemas_dir: Path) -> tuple[_TemplateChecker, SchemaRepository]:
    return _TemplateChecker(build_environment(templates_dir), templates_dir, _Show(templates_dir.parent)), (
        SchemaRepository.load(schemas_dir)
    )


def check_override(
    source: str, trigger: Trigger, catalog: Catalog, name: str, templates_dir: Path, schemas_dir: Path | None = None
) -> list[str]:
    """Problems of a tenant's own template text for a mail of ``trigger``, as ``line N: message``.

    The same checks as for the packs' files: it parses and compiles, extends and includes exist,
    and every merge tag exists for the trigger (its event's fields, or its entity state and
    ``timer`` for a timed trigger).
    """
    schemas_dir = schemas_dir if schemas_dir is not None else templates_dir.parent / "schemas"
    checker, schemas = _override_checker(templates_dir, schemas_dir)
    checker._reported.clear()  # every tenant is checked on its own; repeats are its problems too
    problems, _ = checker.check_string(source, name, 1, trigger_context(schemas, catalog, trigger), trigger.key)
    return [f"line {p.line}: {p.message}" for p in problems]


def lint(
    *,
    templates_dir: Path = REPO_ROOT / "templates",
    schemas_dir: Path = REPO_ROOT / "schemas",
    packs_dir: Path = PACKS_DIR,
    tenants_dir: Path = REPO_ROOT / "deploy" / "tenants",
    root: Path = REPO_ROOT,
) -> Report:
    show = _Show(root)
    report = Report()
    try:
        schemas = SchemaRepository.load(schemas_dir)
        catalog = Catalog.load(packs_dir)
    except ConfigurationError as e:
        report.problems.append(Problem(show(packs_dir), 0, f"cannot load schemas or packs: {e}"))
        return report
    checker = _TemplateChecker(build_environment(templates_dir), templates_dir, show)

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


def _tenant_problems(tenant_file: Path, catalog: Catalog, templates_dir: Path, show: _Show) -> Iterator[Problem]:
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
    parser = argparse.ArgumentParser(prog="python -m streams.rendering.lint", description=__doc__.splitlines()[0])
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
