"""Template checks: a template parses, compiles, extends and includes what exists, and reads only
merge tags its trigger has.

``TemplateChecker`` parses each template once and checks its merge tags against any number of
trigger contexts; the lint (``streams/tools/lint.py``) runs it over every pack and example tenant,
and ``check_override`` runs it over a tenant's own template text (``streams/tenants/validate.py``).
Pure: reads files, renders nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from jinja2 import TemplateError, TemplateNotFound, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from streams.codecs.schemas import SchemaRepository
from streams.domain.rules import Catalog, Trigger
from streams.rendering.environment import build_environment
from streams.rendering.merge_tags import Var, resolves, trigger_context

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


class TemplateChecker:
    """Parses each template once and checks its merge tags against any number of trigger contexts."""

    def __init__(self, env: SandboxedEnvironment, templates_dir: Path, show: Show) -> None:
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
            source, filename, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
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


class Show:
    """File names as the lint prints them: relative to the repository when inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def __call__(self, path: Path) -> str:
        resolved = path.resolve()
        return resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else str(path)

@functools.lru_cache(maxsize=4)
def _override_checker(templates_dir: Path, schemas_dir: Path) -> tuple[TemplateChecker, SchemaRepository]:
    return TemplateChecker(build_environment(templates_dir), templates_dir, Show(templates_dir.parent)), (
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
