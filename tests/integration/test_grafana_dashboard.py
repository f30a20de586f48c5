"""The Grafana dashboard (``deploy/grafana/tidings.json``): generated from ``deploy/grafana/dashboard.py``,
importable (datasource, tenant and trigger variables), and every panel's query parses as PromQL
(promtool, as a recording rule) and names only metrics the worker or the recording rules export."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from deploy.grafana import dashboard
from tests.integration.test_prometheus_rules import RULES, _exported, _rules
from tests.tools import promtool


def _board() -> dict[str, Any]:
    return json.loads(dashboard.OUT.read_text())


def substitute(expr: str) -> str:
    """A panel query as Prometheus receives it from Grafana with every tenant and trigger chosen."""
    return expr.replace("$__rate_interval", "5m").replace("$tenant", ".*").replace("$trigger", ".*")


def test_the_json_is_what_the_generator_writes() -> None:
    assert dashboard.main(["--check"]) == 0, "run python -m deploy.grafana.dashboard"


def test_the_dashboard_has_its_variables_and_rows() -> None:
    board = _board()
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "tenant", "trigger"}
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Flow", "Latency", "Lag and restore", "Timers", "SES", "Worker"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"] if p["type"] != "row")


def test_every_panel_query_parses(tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query_{n}", "expr": substitute(expr)}
             for n, (_, expr) in enumerate(dashboard.queries(_board()))]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_panel_query_names_an_exported_metric_or_a_recording_rule() -> None:
    known = _exported() | {rule["record"] for rule in _rules() if "record" in rule}
    for title, expr in dashboard.queries(_board()):
        names = set(re.findall(r"\b(?:tidings|process)[a-z0-9_:]*", expr))
        assert names - known == set(), (title, RULES.name)
