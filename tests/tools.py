"""Tools from Debian packages some tests need (``promtool`` and ``prometheus`` from ``prometheus``).

Skip locally, fail in CI (STYLE.md, dramatiq's habit): a developer without the package is told
what to install and the test is skipped; under ``CI=true`` (``.ci/run`` installs the package) a
missing tool is a failure.
"""

from __future__ import annotations

import os
import shutil

import pytest


def debian_tool(name: str, package: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.path.isfile(f"/usr/bin/{name}") else None)
    if found is None:
        message = f"{name} is missing: apt-get install {package} (Debian's package; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def promtool() -> str:
    return debian_tool("promtool", "prometheus")


def prometheus() -> str:
    return debian_tool("prometheus", "prometheus")
