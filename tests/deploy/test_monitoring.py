"""Alerts and dashboards: the rules pass promtool, fire when they should, and are everywhere.

- deploy/monitoring/corolla-alerts.rules.yml passes ``promtool check rules`` and its unit tests
  (``promtool test rules`` with corolla-alerts.test.yml: each alert fires on a bad series, not
  on a healthy one). Skipped, saying so, where promtool is not installed (Debian: prometheus).
- The PrometheusRule of components/monitoring holds exactly those groups (it is generated).
- Every metric an alert reads is one the server exports (or kube-state-metrics' restarts, or
  Prometheus' own ``up``), and the Grafana dashboard plots each of them.
- The alert covers what the issue asks: no AVAILABLE version, load failures, error ratio, p99
  latency, queue saturation and 429/503, restarts.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from corolla.metrics import Metrics, render

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "corolla-alerts.rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "corolla-dashboard.json"
_NAME = re.compile(r"(?<![\w:])(:tensorflow:[\w:]+|corolla_\w+|kube_\w+|process_\w+)")
# Gauges computed at scrape time from a running service (see tests/ops/test_dashboard.py).
SCRAPE_GAUGES = {
    "corolla_server_ready", "corolla_server_draining", "corolla_model_versions",
    "corolla_model_ready", "corolla_batch_queue_depth",
}  # fmt: skip


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (apt-get install prometheus); rules not checked")
    return tool


def _rules() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in out.stdout


def test_promtool_unit_tests_fire_each_alert() -> None:
    tests = MONITORING / "corolla-alerts.test.yml"
    out = subprocess.run([_promtool(), "test", "rules", str(tests)], capture_output=True,
                         text=True, timeout=60, check=False, cwd=MONITORING)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    tested = {t["alertname"] for case in yaml.safe_load(tests.read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}  # fmt: skip
    assert tested == {r["alert"] for r in _rules()}, "every alert has a test that fires it"


def test_alerts_cover_the_failure_modes() -> None:
    exprs = {str(r["alert"]): str(r["expr"]) for r in _rules()}
    assert 'state="AVAILABLE"' in exprs["CorollaModelUnavailable"]
    assert "corolla_model_load_failures_total" in exprs["CorollaModelLoadFailures"]
    assert "INTERNAL" in exprs["CorollaHighErrorRatio"]
    assert "histogram_quantile(0.99" in exprs["CorollaHighLatencyP99"]
    assert "RESOURCE_EXHAUSTED|UNAVAILABLE" in exprs["CorollaShedding"]
    assert "corolla_batch_queue_depth" in exprs["CorollaQueueSaturated"]
    assert "kube_pod_container_status_restarts_total" in exprs["CorollaRestarting"]
    for rule in _rules():
        assert rule["labels"]["severity"] in ("critical", "warning")  # type: ignore[index]
        assert rule["annotations"]["summary"]  # type: ignore[index]


def test_prometheusrule_is_generated_from_the_rules() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen-prometheusrule.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = gen.TARGET.read_text()
    assert current == gen.render(), "regenerate: python3 scripts/gen-prometheusrule.py"
    assert yaml.safe_load(current)["spec"] == yaml.safe_load(RULES.read_text())


def _exported() -> set[str]:
    m = Metrics()
    m.observe_request("m", "Predict", "REST", "OK", 0.001)
    m.runtime_latency.labels("m", "Predict", "onnx").observe(1)
    m.batch_hook("m")(4, [0.001])
    m.on_load("m", 1, 0.5, None)
    m.load_failures.labels("m").inc()
    names = {
        line.split("{")[0].split(" ")[0]
        for line in render(m.registry).decode().splitlines()
        if not line.startswith("#")
    }
    return names | SCRAPE_GAUGES | {"kube_pod_container_status_restarts_total"}


def test_alert_metrics_exist_and_are_on_the_dashboard() -> None:
    used = {n for r in _rules() for n in _NAME.findall(str(r["expr"]))}
    assert used
    assert not sorted(used - _exported()), "alerts read metrics nobody exports"

    def exprs(panels: list[dict[str, object]]) -> list[str]:
        out: list[str] = []
        for p in panels:
            out += [str(t["expr"]) for t in p.get("targets", [])]  # type: ignore[attr-defined]
            out += exprs(p.get("panels", []))  # type: ignore[arg-type]
        return out

    doc = json.loads(DASHBOARD.read_text())
    on_dashboard = {n for e in exprs(doc["panels"]) for n in _NAME.findall(e)}
    # Histograms are plotted through their _bucket series, like the alerts read them.
    assert not sorted(used - on_dashboard), "plot what the alerts watch"
    assert any(p["type"] == "alertlist" for p in doc["panels"])
