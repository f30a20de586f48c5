"""The package layout the README describes: one seam to Faust, below every stage."""

from __future__ import annotations

import ast
from pathlib import Path

from streams.settings import REPO_ROOT

PACKAGE = REPO_ROOT / "streams"
FRAMEWORKS = ("faust", "aiokafka", "mode")
# The pipeline's stage packages; shared types live below them (streams/domain/, streams/outcomes.py, errors, ...).
STAGES = (
    "codecs", "ingest", "state", "triggers", "rendering", "delivery", "suppression", "tenants", "customers", "redrive", "replay",
    "tools",
)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at run time or for type checking alike."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _modules() -> dict[str, set[str]]:
    return {
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts): _imports(path)
        for path in PACKAGE.rglob("*.py")
    }


def test_only_the_runtime_package_imports_faust_or_aiokafka() -> None:
    offenders = sorted(
        f"{module} imports {imported}"
        for module, imports in _modules().items()
        if not module.startswith("streams.runtime")
        for imported in imports
        if imported.split(".")[0] in FRAMEWORKS
    )
    assert offenders == []


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in STAGES else None


def test_the_runtime_imports_no_stage_package() -> None:
    offenders = sorted(
        f"{module} imports {imported}"
        for module, imports in _modules().items()
        if module.startswith("streams.runtime")
        for imported in imports
        if _stage(imported) is not None
    )
    assert offenders == []


def _subpackage(module: str, packages: set[str]) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "streams" and len(parts) > 1 and parts[1] in packages else None


def _package_graph() -> dict[str, dict[str, set[str]]]:
    """Edges between the subpackages of ``streams``: ``graph[a][b]`` is the files of ``a`` importing ``b``.

    Every import in a file counts: module level, inside functions and under ``TYPE_CHECKING``.
    Top-level modules (``streams/errors.py``, ``streams/app.py``, ...) are not packages, so no nodes.
    """
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    graph: dict[str, dict[str, set[str]]] = {package: {} for package in packages}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2 or parts[0] not in packages:
            continue
        source = parts[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                # A relative import is resolved against the file's package (``from ..x import y``).
                here = ("streams", *parts[:-1])  # the file's package, for a module and an __init__.py alike
                base = ".".join(here[: len(here) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                # ``from streams import triggers`` imports the package ``streams.triggers``.
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _subpackage(name, packages)
                if target is not None and target != source:
                    graph[source].setdefault(target, set()).add(str(path.relative_to(REPO_ROOT)))
    return graph


def _cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    """One cycle of ``graph`` as its nodes in order (first node repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_stage_packages_import_no_cycle() -> None:
    graph = _package_graph()
    cycle = _cycle(graph)
    if cycle is not None:
        steps = "\n".join(
            f"  {source} -> {target}: " + ", ".join(sorted(graph[source][target]))
            for source, target in zip(cycle, cycle[1:], strict=False)
        )
        raise AssertionError(f"import cycle {' -> '.join(cycle)}:\n{steps}")


def test_the_cycle_check_finds_a_cycle() -> None:
    graph: dict[str, dict[str, set[str]]] = {"a": {"b": {"a.py"}}, "b": {"c": {"b.py"}}, "c": {"a": {"c.py"}}, "d": {}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": {"a.py"}}, "b": {}}) is None


def test_the_domain_imports_no_other_package() -> None:
    """``streams/domain/`` is below every stage: top-level ``streams`` modules and itself only."""
    assert _package_graph()["domain"] == {}
