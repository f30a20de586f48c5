"""The Helm chart (``deploy/helm/tidings``): ``helm lint --strict``, ``helm template`` decoded
strictly against the Kubernetes API types (``deploy/helm/manifestcheck``, unknown fields
disallowed), the PrometheusRule's rules through promtool, probes on ``/healthz`` and ``/readyz``.

helm and the checker are built by ``make tools`` into ``.tidings/tools/bin`` (helm from the Go
module proxy at the Makefile's HELM_VERSION); without them the test skips, except under ``CI=true``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import REPO_ROOT
from tests.integration.test_prometheus_rules import RULES
from tests.tools import promtool

CHART = REPO_ROOT / "deploy" / "helm" / "tidings"
TOOLS = REPO_ROOT / ".tidings" / "tools" / "bin"


def _tool(name: str) -> str:
    path = TOOLS / name
    if not path.is_file():
        message = f"{path} is missing: run make tools (needs Go)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


def _run(*command: str, stdin: str | None = None) -> str:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _rendered(*sets: str) -> str:
    args = [a for s in sets for a in ("--set", s)]
    return _run(_tool("helm"), "template", "t", str(CHART), *args)


def _docs(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d and d["kind"] != "ConfigMap"} | {
        f"ConfigMap/{d['metadata']['name']}": d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap"
    }


def test_helm_lint_is_clean() -> None:
    _run(_tool("helm"), "lint", "--strict", str(CHART))


def test_the_rendered_manifests_decode_strictly_into_the_kubernetes_types() -> None:
    out = _run(_tool("manifestcheck"), stdin=_rendered())
    for kind in ("StatefulSet", "PodDisruptionBudget", "Service", "Secret", "ConfigMap", "Job"):
        assert f" {kind}" in out, out


def test_the_checker_refuses_an_unknown_field() -> None:
    broken = _rendered().replace("  serviceName:", "  servceName:")
    done = subprocess.run([_tool("manifestcheck")], input=broken, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and 'unknown field "servceName"' in done.stdout


def test_the_workers_are_a_statefulset_with_state_probes_and_resources() -> None:
    docs = _docs(_rendered())
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["resources"]["requests"] and worker["resources"]["limits"]
    assert docs["StatefulSet"]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    assert {"configMapRef", "secretRef"} <= {k for e in worker["envFrom"] for k in e}
    assert docs["Job"]["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert docs["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"


def test_a_worker_that_stops_itself_says_why_in_its_termination_message() -> None:
    """The worker writes its reason (exit 75, the record or commit, the error type) to the file
    Kubernetes reads as the termination message; a crash that wrote nothing shows its log's tail."""
    docs = _docs(_rendered("statelessLane.enabled=true"))
    assert docs["ConfigMap/t-tidings"]["data"]["TIDINGS_TERMINATION_LOG"] == "/dev/termination-log"
    for kind in ("StatefulSet", "Deployment"):
        worker = docs[kind]["spec"]["template"]["spec"]["containers"][0]
        assert worker.get("terminationMessagePath", "/dev/termination-log") == "/dev/termination-log", kind
        assert worker["terminationMessagePolicy"] == "FallbackToLogsOnError", kind


def test_the_prometheus_rule_carries_the_projects_rules_with_the_chosen_runbook(tmp_path: Path) -> None:
    assert (CHART / "rules" / "tidings.rules.yml").read_text() == RULES.read_text(), (
        "copy deploy/prometheus/rules/tidings.rules.yml to deploy/helm/tidings/rules/")
    rule = _docs(_rendered("prometheusRule.runbookBaseURL=https://wiki.example/tidings"))["PrometheusRule"]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    _run(promtool(), "check", "rules", str(path))
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts and all(a["annotations"]["runbook_url"].startswith("https://wiki.example/tidings#") for a in alerts)


def test_the_stateless_lane_is_a_deployment_of_its_own_selected_apart_from_the_statefulset() -> None:
    assert "Deployment" not in _docs(_rendered()), "the lane is off by default"
    text = _rendered("statelessLane.enabled=true")
    out = _run(_tool("manifestcheck"), stdin=text)
    assert " Deployment" in out, out
    docs = [d for d in yaml.safe_load_all(text) if d]
    [lane] = [d for d in docs if d["kind"] == "Deployment"]
    [workers] = [d for d in docs if d["kind"] == "StatefulSet"]

    def role(workload: dict[str, Any]) -> str:
        [container] = workload["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e["value"] for e in container.get("env", [])}["TIDINGS_ROLE"]

    assert (role(workers), role(lane)) == ("stateful", "stateless")
    # Neither controller's selector matches the other's pods.
    for one, other in ((workers, lane), (lane, workers)):
        selector = one["spec"]["selector"]["matchLabels"]
        pod_labels = other["spec"]["template"]["metadata"]["labels"]
        assert not selector.items() <= pod_labels.items()
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    lane_labels = lane["spec"]["template"]["metadata"]["labels"]
    assert any(s["spec"]["selector"].items() <= lane_labels.items() for s in services.values())
    assert any(m["spec"]["selector"]["matchLabels"].items() <= services["t-tidings-stateless"]["metadata"]["labels"].items()
               for m in monitors)
