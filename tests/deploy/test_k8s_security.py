"""Secure by default, sized by the pod, monitored, reachable: what every overlay must keep.

- Every rendered pod (base, overlays, and the alternatives in components/: ingress, keda) has
  the API keys Secret mounted as a directory (rotation reaches the file) and passed to
  ``--api_keys_file``, health and metrics open (kubelet, Prometheus), ``--allowed_model_roots``
  on the model volume, ``COROLLA_CPUS`` from its own CPU request, a NetworkPolicy that lets in
  only the gateway's namespace and Prometheus and lets nothing out.
- The probes and the scrape path are checked against a real server started with the
  manifests' own security flags: they answer 200 without a key, while the API needs one.
- Custom resources: PodMonitor, PrometheusRule and ScaledObject are validated against models
  generated from their CRDs' OpenAPI schemas (the cloudcoil-models-* packages, ``dev`` extra;
  unknown fields fail, because a round trip must give the object back unchanged). Gateway API
  objects (Gateway, HTTPRoute, GRPCRoute) have no such package on PyPI: they are checked
  structurally here (versions, parent and backend references, TLS, host names).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_manifests import DEPLOY, TARGETS, _kustomize, one, render, serve_args

from corolla.demo_model import write_demo_version

yaml = pytest.importorskip("yaml")

COMPONENT_SETS = {
    "base+ingress+keda": ("base", ["ingress", "keda"]),
    "prod": ("overlays/prod", []),
}


def render_with(tmp_path: Path, resource: str, components: list[str]) -> tuple[dict[str, Any], ...]:
    """Render ``resource`` with extra components through a kustomization in ``tmp_path``."""
    cmd = _kustomize()
    if cmd is None:
        pytest.skip("needs kubectl or kustomize on PATH")
    k8s = DEPLOY / "k8s"
    rel = lambda p: os.path.relpath(k8s / p, tmp_path)  # noqa: E731  (kustomize: no absolute)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel(resource)],
        "components": [rel(f"components/{c}") for c in components],
    }))  # fmt: skip
    out = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, timeout=120,
                         check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def all_renders(tmp_path: Path) -> dict[str, tuple[dict[str, Any], ...]]:
    out = {t: render(t) for t in TARGETS}
    out["base+ingress+keda"] = render_with(tmp_path, "base", ["ingress", "keda"])
    return out


def _flag(args: list[str], name: str) -> str | None:
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


# ---- every pod -------------------------------------------------------------------------------


def test_every_pod_is_locked_down_and_sized(tmp_path: Path) -> None:
    for target, objs in all_renders(tmp_path).items():
        deploy = one(objs, "Deployment")
        spec = deploy["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        args = c["args"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert spec["securityContext"]["runAsNonRoot"] is True, target
        assert spec["automountServiceAccountToken"] is False, target

        keys_file = _flag(args, "api_keys_file")
        assert keys_file, f"{target}: no --api_keys_file"
        mount = mounts[os.path.dirname(keys_file)]
        assert "subPath" not in mount, f"{target}: a subPath mount never sees a rotated Secret"
        assert mount["readOnly"] is True
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == "corolla-api-keys" and not secret.get("optional")
        assert secret["defaultMode"] & 0o007 == 0, "the keys are not world-readable"
        opened = set((_flag(args, "auth_open_endpoints") or "").split(","))
        assert {"health", "metrics"} <= opened, f"{target}: kubelet and Prometheus need no key"
        # The model roots: the model volume (read-only), or the cache of a bucket's versions.
        roots = _flag(args, "allowed_model_roots")
        if _flag(args, "model_cache_dir"):
            assert roots == _flag(args, "model_cache_dir") == "/var/cache/corolla"
            assert "emptyDir" in volumes[mounts[roots]["name"]]
        else:
            assert roots == "/models" and mounts["/models"]["readOnly"] is True
        serve_args(args)  # every flag parses

        env = {e["name"]: e for e in c.get("env", [])}
        ref = env["COROLLA_CPUS"]["valueFrom"]["resourceFieldRef"]
        assert ref == {"containerName": c["name"], "resource": "requests.cpu", "divisor": "1"}
        assert "cpu" in c["resources"]["requests"]
        assert "cpu" not in c["resources"].get("limits", {}), "no CPU limit: no CFS throttling"

        labels = deploy["spec"]["template"]["metadata"]["labels"]
        (policy,) = [o for o in objs if o["kind"] == "NetworkPolicy"]
        ps = policy["spec"]
        assert ps["podSelector"]["matchLabels"].items() <= labels.items(), target
        assert sorted(ps["policyTypes"]) == ["Egress", "Ingress"]
        if _flag(args, "model_cache_dir") or spec.get("initContainers", [{}])[0].get("envFrom"):
            # The bucket: DNS and HTTPS out, nothing else.
            allowed = {(p["port"], p["protocol"]) for e in ps["egress"] for p in e["ports"]}
            assert allowed == {(53, "UDP"), (53, "TCP"), (443, "TCP")}, target
            assert all("to" not in e for e in ps["egress"])
        else:
            assert ps["egress"] == [], f"{target}: the server needs no network out"
        ports = {p["name"] for p in c["ports"]}
        sources = []
        for rule in ps["ingress"]:
            assert {p["port"] for p in rule["ports"]} <= ports
            for peer in rule["from"]:
                assert "ipBlock" not in peer and peer.get("namespaceSelector"), peer
                sources.append(peer["namespaceSelector"]["matchLabels"])
        assert {"corolla.io/gateway": "allowed"} in sources
        assert {"kubernetes.io/metadata.name": "monitoring"} in sources


def test_cloud_run_is_locked_down() -> None:
    for path in sorted((DEPLOY / "cloudrun").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        spec = doc["spec"]["template"]["spec"]
        sa = spec["serviceAccountName"]
        assert sa.startswith("corolla-server@"), f"{path.name}: a dedicated service account"
        (c,) = spec["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["COROLLA_CPUS"]["value"] == c["resources"]["limits"]["cpu"]
        keys_file = _flag(c["args"], "api_keys_file")
        assert keys_file
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        secret = volumes[mounts[os.path.dirname(keys_file)]["name"]]["secret"]
        # Secret Manager: the secret's name, its latest version as the file api-keys.
        assert secret["items"] == [{"key": "latest", "path": os.path.basename(keys_file)}]
        # No Prometheus scrapes Cloud Run: only the health endpoints are open.
        assert "metrics" not in (_flag(c["args"], "auth_open_endpoints") or "health")


# ---- the probes and the scrape path, against a real server --------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_probes_and_scrape_answer_without_a_key(tmp_path: Path) -> None:
    objs = render("overlays/prod")
    pod = one(objs, "Deployment")["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    paths = {c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    (monitor,) = [o for o in objs if o["kind"] == "PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    paths.add(endpoint["path"])
    for path in sorted((DEPLOY / "cloudrun").glob("*.yaml")):
        (cr,) = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"]
        paths |= {cr[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe")
                  if p in cr and "httpGet" in cr[p]}  # fmt: skip

    # The manifests' own security flags, with paths on this machine.
    (tmp_path / "keys").write_text("the-key\n")
    write_demo_version(tmp_path / "models" / "colors", 1, size=16)
    (cm,) = [o for o in objs if o["metadata"]["name"].startswith("corolla-config")]
    (tmp_path / "monitoring.config").write_text(cm["data"]["monitoring.config"])
    rest, grpc_port = _free_port(), _free_port()
    args = [a for a in c["args"] if a.startswith(("--auth_open_endpoints", "--shutdown_grace",
                                                  "--drain_timeout"))]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "corolla", "serve", "--host=127.0.0.1", f"--port={grpc_port}",
         f"--rest_api_port={rest}", "--model_name=colors",
         f"--model_base_path={tmp_path / 'models' / 'colors'}",
         f"--api_keys_file={tmp_path / 'keys'}", f"--allowed_model_roots={tmp_path / 'models'}",
         f"--monitoring_config_file={tmp_path / 'monitoring.config'}", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "COROLLA_CPUS": "1"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{rest}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        for path in sorted(paths):
            assert httpx.get(base + path, timeout=10).status_code == 200, path
        assert httpx.get(f"{base}/v1/models/colors", timeout=10).status_code == 401
        ok = httpx.get(f"{base}/v1/models/colors", headers={"x-api-key": "the-key"}, timeout=10)
        assert ok.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---- custom resources ------------------------------------------------------------------------


def _roundtrip(cls: Any, obj: dict[str, Any]) -> dict[str, Any]:
    dumped: dict[str, Any] = cls.model_validate(obj).model_dump(
        by_alias=True, exclude_unset=True, mode="json"
    )
    return dumped


def test_prometheus_operator_and_keda_objects_validate(tmp_path: Path) -> None:
    mon = pytest.importorskip("cloudcoil.models.prometheus_operator.v1")
    keda = pytest.importorskip("cloudcoil.models.keda.v1alpha1")
    checked = set()
    for target, objs in all_renders(tmp_path).items():
        deploy = one(objs, "Deployment")
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for obj in objs:
            cls = {"PodMonitor": mon.PodMonitor, "PrometheusRule": mon.PrometheusRule,
                   "ScaledObject": keda.ScaledObject}.get(obj["kind"])  # fmt: skip
            if cls is None:
                continue
            assert _roundtrip(cls, obj) == obj, f"{target}: {obj['kind']} has unknown fields"
            checked.add(obj["kind"])
            if obj["kind"] == "PodMonitor":
                assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items()
                assert {e["port"] for e in obj["spec"]["podMetricsEndpoints"]} <= ports
            if obj["kind"] == "ScaledObject":
                ref = obj["spec"]["scaleTargetRef"]
                assert (ref["kind"], ref["name"]) == ("Deployment", deploy["metadata"]["name"])
                assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"], (
                    "KEDA owns its HPA: the base's must go"
                )
    assert checked == {"PodMonitor", "PrometheusRule", "ScaledObject"}


def test_gateway_api_routes_structurally(tmp_path: Path) -> None:
    prod = render("overlays/prod")
    canary = render("overlays/canary")
    (gateway,) = [o for o in prod if o["kind"] == "Gateway"]
    assert gateway["apiVersion"] == "gateway.networking.k8s.io/v1"
    listeners = {li["name"]: li for li in gateway["spec"]["listeners"]}
    https = listeners["https"]
    assert https["protocol"] == "HTTPS" and https["port"] == 443
    assert https["tls"]["mode"] == "Terminate" and https["tls"]["certificateRefs"]
    services = {o["metadata"]["name"]: {p["port"] for p in o["spec"]["ports"]}
                for o in (*prod, *canary) if o["kind"] == "Service"}  # fmt: skip
    routes = [o for o in (*prod, *canary) if o["kind"] in ("HTTPRoute", "GRPCRoute")]
    assert {r["kind"] for r in routes} == {"HTTPRoute", "GRPCRoute"}
    suffix = https["hostname"].removeprefix("*")
    for route in routes:
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1", route["metadata"]["name"]
        assert set(route["spec"]) <= {"parentRefs", "hostnames", "rules"}
        for parent in route["spec"]["parentRefs"]:
            assert parent["name"] == gateway["metadata"]["name"]
            assert parent["sectionName"] in listeners
        for host in route["spec"]["hostnames"]:
            assert host.endswith(suffix), host
        for rule in route["spec"]["rules"]:
            assert set(rule) <= {"matches", "backendRefs", "filters", "timeouts"}, rule
            for ref in rule.get("backendRefs", []):
                assert ref["port"] in services[ref["name"]], ref
                want = 8500 if route["kind"] == "GRPCRoute" else 8501
                assert ref["port"] == want
        if parent["sectionName"] == "http":  # plain HTTP only redirects
            assert [f["type"] for r in route["spec"]["rules"] for f in r["filters"]] == [
                "RequestRedirect"
            ]
    grpc_services = {m["method"]["service"] for r in routes if r["kind"] == "GRPCRoute"
                     for rule in r["spec"]["rules"] for m in rule["matches"]}  # fmt: skip
    assert "tensorflow.serving.PredictionService" in grpc_services
    assert "inference.GRPCInferenceService" in grpc_services


def test_models_from_the_bucket_settings_agree() -> None:
    """prod reads the bucket that its ConfigMap names; prod-init's init container fetches the
    same bucket with a command line Corolla's own parser accepts."""
    from corolla.cli import build_parser
    from corolla.config import parse_model_config_text

    for target in ("overlays/prod", "overlays/prod-init"):
        objs = render(target)
        (storage,) = [o for o in objs if o["metadata"]["name"] == "corolla-storage"]
        uri = storage["data"]["MODELS_URI"]
        assert uri.startswith(("s3://", "gs://"))
        (cfg,) = [o for o in objs if o["metadata"]["name"].startswith("corolla-config")]
        models = parse_model_config_text(cfg["data"]["models.config"])
        spec = one(objs, "Deployment")["spec"]["template"]["spec"]
        if target == "overlays/prod":
            assert [m.base_path for m in models] == [f"{uri}/flowers"]
            (c,) = spec["containers"]
            refs = [e.get("configMapRef", e.get("secretRef"))["name"] for e in c["envFrom"]]
            assert refs == ["corolla-storage", "corolla-storage-credentials"]
        else:
            assert [m.base_path for m in models] == ["/models/flowers"]
            (init,) = spec["initContainers"]
            argv = [a.replace("$(MODELS_URI)", uri) for a in init["command"][1:] + init["args"]]
            args = build_parser().parse_args(argv)
            assert (args.command, args.src, str(args.dest)) == (
                "fetch-model", f"{uri}/flowers", "/models/flowers"
            )  # fmt: skip
            assert "envFrom" not in spec["containers"][0], "the server holds no store credentials"
