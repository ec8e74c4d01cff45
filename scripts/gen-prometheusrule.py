#!/usr/bin/env python3
"""Write deploy/k8s/components/monitoring/prometheusrule.yaml from the Prometheus rule file.

deploy/monitoring/corolla-alerts.rules.yml is the source (promtool checks and unit-tests it);
the Prometheus Operator needs the same groups inside a PrometheusRule object. Needs PyYAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "deploy" / "monitoring" / "corolla-alerts.rules.yml"
TARGET = ROOT / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
HEADER = (
    "# Generated from deploy/monitoring/corolla-alerts.rules.yml (the same groups, checked by\n"
    "# tests/deploy/test_monitoring.py): edit that file, then regenerate with\n"
    "#   python3 scripts/gen-prometheusrule.py\n"
)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> Any:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "corolla",
            "labels": {
                "app.kubernetes.io/name": "corolla",
                "app.kubernetes.io/component": "model-server",
                "release": "kube-prometheus-stack",
            },
        },
        "spec": yaml.safe_load(SOURCE.read_text()),
    }
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


if __name__ == "__main__":
    TARGET.write_text(render())
    print(TARGET)
