"""The package layout the README describes: one seam to Faust, below every stage."""

from __future__ import annotations

import ast
from pathlib import Path

from streams.settings import REPO_ROOT

PACKAGE = REPO_ROOT / "streams"
FRAMEWORKS = ("faust", "aiokafka", "mode")
# The pipeline's stage packages; shared types live below them (streams/outcomes.py, errors, ...).
STAGES = ("codecs", "ingest", "state", "triggers", "rendering", "delivery", "suppression", "tenants", "redrive", "replay")


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
