"""The Grafana dashboard in deploy/ queries only metrics that the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from corolla.metrics import Metrics, render

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "corolla-dashboard.json"
_NAME = re.compile(r"(?<![\w:])(:tensorflow:[\w:]+|corolla_\w+|process_\w+)")


def _exprs(panels: list[dict[str, object]]) -> list[str]:
    out = []
    for p in panels:
        for t in p.get("targets", []):  # type: ignore[attr-defined]
            out.append(t["expr"])
        out += _exprs(p.get("panels", []))  # type: ignore[arg-type]
    return out


def test_dashboard_metric_names_exist() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = _exprs(doc["panels"])
    assert len(exprs) >= 15
    m = Metrics()
    m.observe_request("m", "Predict", "REST", "OK", 0.001)
    m.runtime_latency.labels("m", "Predict", "onnx").observe(1)
    m.batch_hook("m")(4, [0.001])
    m.on_load("m", 1, 0.5, None)
    m.on_unload("m", 1, 0.1, None)
    m.load_failures.labels("m").inc()
    samples = {
        line.split("{")[0].split(" ")[0]
        for line in render(m.registry).decode().splitlines()
        if not line.startswith("#")
    }
    # Scrape-time gauges need a running service; their names are fixed here.
    samples |= {
        "corolla_server_ready",
        "corolla_server_draining",
        "corolla_model_versions",
        "corolla_model_ready",
        "corolla_batch_queue_depth",
    }
    used = {name for e in exprs for name in _NAME.findall(e)}
    assert used, exprs
    missing = sorted(used - samples)
    assert not missing, missing
