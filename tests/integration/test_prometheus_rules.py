"""The alert and recording rules (``deploy/prometheus/rules/``) against promtool: they load, every
alert fires on a synthetic series and stays quiet on a healthy one (``promtool test rules``), and
they name only metrics the worker exports (``streams/metrics.py``) and runbook sections that exist.

Needs Debian's ``prometheus`` package (``promtool``); skipped without it, except under ``CI=true``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from streams import metrics
from streams.settings import REPO_ROOT
from tests.tools import promtool

RULES_DIR = REPO_ROOT / "deploy" / "prometheus" / "rules"
RULES = RULES_DIR / "tidings.rules.yml"
TESTS = RULES_DIR / "tidings.test.yml"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _run(*args: str, cwd: Path = RULES_DIR) -> str:
    done = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_rules_load() -> None:
    assert "SUCCESS" in _run("check", "rules", str(RULES))


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in _run("test", "rules", TESTS.name)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fires == set(), "alerts never seen firing"
    assert names - quiet == set(), "alerts never seen quiet"


def _exported() -> set[str]:
    m = metrics.with_process_metrics(metrics.create(CollectorRegistry()))
    out = set()
    for family in m.registry.collect():
        out.add(family.name)
        for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
            out.add(family.name + suffix)
    return out


def test_rules_name_only_metrics_the_worker_exports() -> None:
    used = {name for rule in _rules() for name in re.findall(r"\b(?:tidings|process)_[a-z0-9_]+", rule["expr"])}
    assert used, "no metric found in the rules"
    assert used - _exported() == set()


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines() if line.startswith("#")
    }
    for alert in _alerts():
        url = alert["annotations"]["runbook_url"]
        assert url.startswith("https://") and "#" in url, alert["alert"]
        assert url.split("#", 1)[1] in headings, f"{alert['alert']}: no section #{url.split('#', 1)[1]} in {RUNBOOK}"
        assert alert["annotations"].get("summary"), alert["alert"]
