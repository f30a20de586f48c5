"""Generates ``deploy/grafana/tidings.json``, the Tidings dashboard, from the panel list below.

    python -m deploy.grafana.dashboard          write tidings.json
    python -m deploy.grafana.dashboard --check  fail if tidings.json is not what this writes

Plain JSON in Grafana's dashboard model (schemaVersion 39), no SDK: the dashboard is a list of
rows of (title, unit, queries). Variables: ``datasource`` (any Prometheus), ``tenant`` and
``trigger`` (multi-select, from ``tidings_emails_rendered_total``). Every query is checked:
``tests/integration/test_grafana_dashboard.py`` parses each with promtool, and the live test
(``tests/integration/test_prometheus_live.py``) evaluates each against a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("tidings.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
T = 'tenant=~"$tenant"'
TT = 'tenant=~"$tenant",trigger=~"$trigger"'
R = "$__rate_interval"

# (row title, [(panel title, unit, [(legend, expr), ...]), ...])
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    ("Flow", [
        ("Events in", "ops", [("{{topic}}", f"sum by (topic) (rate(tidings_events_consumed_total[{R}]))")]),
        ("Mails rendered", "ops", [("{{tenant}} {{trigger}}", f"sum by (tenant, trigger) (rate(tidings_emails_rendered_total{{{TT}}}[{R}]))")]),
        ("Mails sent", "ops", [("{{tenant}} {{trigger}}", f"sum by (tenant, trigger) (rate(tidings_emails_sent_total{{{TT}}}[{R}]))")]),
        ("Mails suppressed", "ops", [("{{tenant}} {{reason}}", f"sum by (tenant, reason) (rate(tidings_mails_suppressed_total{{{T}}}[{R}]))")]),
        ("Dead-lettered", "ops", [("{{stage}} {{reason}}", f"sum by (stage, reason) (rate(tidings_dead_letters_total[{R}]))")]),
    ]),
    ("Latency", [
        ("Event to sent (p50, p99)", "s", [
            ("p50", f'histogram_quantile(0.5, sum by (le) (rate(tidings_event_to_sent_seconds_bucket{{trigger=~"$trigger"}}[{R}])))'),
            ("p99", f'histogram_quantile(0.99, sum by (le) (rate(tidings_event_to_sent_seconds_bucket{{trigger=~"$trigger"}}[{R}])))'),
        ]),
        ("Send queue p99 per lane", "s", [("{{lane}}", f"histogram_quantile(0.99, sum by (le, lane) (rate(tidings_send_queue_seconds_bucket[{R}])))")]),
        ("Render p99", "s", [("render", f"histogram_quantile(0.99, sum by (le) (rate(tidings_render_seconds_bucket[{R}])))")]),
        ("SLO: late mails (over 60 s), error ratio 1 h", "percentunit", [("1h", "tidings:slo_send_latency:error_ratio1h")]),
    ]),
    ("Lag and restore", [
        ("Consumer lag per topic", "short", [("{{topic}}", "sum by (topic) (tidings_consumer_lag_records)")]),
        ("Consumer lag per partition (top 10)", "short", [("{{topic}}[{{partition}}]", "topk(10, tidings_consumer_lag_records)")]),
        ("Restore: rows to go", "short", [("{{table}}", "sum by (table) (tidings_restore_rows_remaining)")]),
        ("Workers ready", "short", [("ready", "sum(tidings_worker_ready)"), ("workers", "count(tidings_worker_ready)")]),
    ]),
    ("Timers", [
        ("Pending", "short", [("pending", "sum(tidings_timers_pending)")]),
        # Pending counts only built partitions: a partition still rebuilding its index after a
        # rebalance or restart shows here first, its timers not yet counted (nor fired).
        ("Partitions with a built timer index", "short", [("{{instance}}", "sum by (instance) (tidings_timer_partitions_ready)")]),
        ("Fire lag p99", "s", [("p99", f"histogram_quantile(0.99, sum by (le) (rate(tidings_timer_fire_lag_seconds_bucket[{R}])))")]),
        ("Oldest due, not fired", "s", [("oldest", "max(tidings_timer_oldest_due_seconds)")]),
        ("Fired, late and skipped", "ops", [
            ("fired {{tenant}} {{trigger}}", f"sum by (tenant, trigger) (rate(tidings_timers_fired_total{{{TT}}}[{R}]))"),
            ("{{reason}} {{tenant}} {{trigger}}", f"sum by (tenant, trigger, reason) (rate(tidings_timers_skipped_total{{{TT}}}[{R}]))"),
        ]),
    ]),
    ("SES", [
        ("Send rate vs quota", "ops", [
            ("sent", f"sum(rate(tidings_emails_sent_total[{R}]))"),
            ("MaxSendRate", "max(tidings_ses_max_send_rate)"),
        ]),
        ("24-hour quota used", "percentunit", [("used", "max(tidings_ses_sent_last_24h) / max(tidings_ses_max_24h_send > 0)")]),
        ("Throttles and retries", "ops", [("{{reason}}", f"sum by (reason) (rate(tidings_send_retries_total[{R}]))")]),
        ("Sending blocked", "short", [("{{reason}}", "max by (reason) (tidings_sender_blocked)"), ("sending enabled (once polled)", 'min(tidings_ses_sending_enabled) and on() sum(tidings_ses_account_polls_total{outcome="ok"}) > 0')]),
        ("Bounce rate per tenant (SES reviews at 5 %)", "percentunit", [
            ("{{tenant}}", f'tidings:tenant_bounce_rate:ratio24h{{{T}}}'), ("SES review", "vector(0.05)"),
        ]),
        ("Complaint rate per tenant (SES reviews at 0.1 %)", "percentunit", [
            ("{{tenant}}", f'tidings:tenant_complaint_rate:ratio24h{{{T}}}'), ("SES review", "vector(0.001)"),
        ]),
    ]),
    ("Worker", [
        ("CPU", "percentunit", [("{{instance}}", f"rate(process_cpu_seconds_total[{R}])")]),
        ("RSS", "bytes", [("{{instance}}", "process_resident_memory_bytes")]),
        ("Event loop lag", "s", [("{{instance}}", "tidings_event_loop_lag_seconds")]),
        ("Commit duration p99", "s", [("{{instance}}", "histogram_quantile(0.99, sum by (le, instance) "
                                                       f"(rate(tidings_commit_seconds_bucket[{R}])))")]),
        ("Build", "short", [("{{instance}} {{role}} {{version}} faust {{faust_version}}", "tidings_build_info")]),
        # Exit 75 (the broker or the disk failed under a record or a commit) or 1 (a bug); alert at 3.
        ("Restarts (30 min)", "short", [("{{instance}}", "changes((process_start_time_seconds and on (instance) "
                                                         "tidings_build_info)[30m:1m])")]),
    ]),
]


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": name, "type": "query", "datasource": DS, "multi": True, "includeAll": True,
        "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "refresh": 2, "sort": 1,
        "definition": query, "query": {"query": query, "refId": f"{name}-values"},
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for row, row_panels in ROWS:
        panels.append({"type": "row", "title": row, "id": next_id, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id, y = next_id + 1, y + 1
        width = 24 // len(row_panels)
        for i, (title, unit, queries) in enumerate(row_panels):
            panels.append({
                "type": "timeseries", "title": title, "id": next_id, "datasource": DS,
                "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + n)}
                    for n, (legend, expr) in enumerate(queries)
                ],
            })
            next_id += 1
        y += 8
    return {
        "title": "Tidings", "uid": "tidings", "tags": ["tidings"], "timezone": "browser", "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            _variable("tenant", "label_values(tidings_emails_rendered_total, tenant)"),
            _variable("trigger", 'label_values(tidings_emails_rendered_total{tenant=~"$tenant"}, trigger)'),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (panel title, expr) of a dashboard."""
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.grafana.dashboard")
    parser.add_argument("--check", action="store_true", help="fail if tidings.json differs from what this writes")
    args = parser.parse_args(argv)
    if args.check:
        if not OUT.exists() or OUT.read_text() != render():
            print(f"{OUT} is stale: run python -m deploy.grafana.dashboard", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(render())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
