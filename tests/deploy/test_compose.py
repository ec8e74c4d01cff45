"""deploy/compose without Docker: the files agree with each other and with the server.

The stack itself runs in scripts/cluster-check.sh (CI, where Docker can run). Here: every
replica is locked down and configured like the Kubernetes pods (keys, open health and metrics,
model roots = the cache, flags that parse); HAProxy's configuration is valid (``haproxy -c``,
when installed), balances over the three replicas with readiness checks on each, and retries
what could not be delivered; the models.config the replicas read parses and names the store.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from corolla.cli import build_parser
from corolla.config import parse_model_config_text

yaml = pytest.importorskip("yaml")

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose"
REPLICAS = ("corolla1", "corolla2", "corolla3")


def _services() -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = yaml.safe_load(
        (COMPOSE / "docker-compose.yml").read_text()
    )["services"]
    return services


def _flag(args: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")), None)


def test_replicas_are_locked_down_and_configured() -> None:
    services = _services()
    assert set(REPLICAS) <= set(services)
    for name in REPLICAS:
        s = services[name]
        assert s["user"] == "10001:10001" and s["read_only"] is True, name
        assert s["cap_drop"] == ["ALL"] and "no-new-privileges:true" in s["security_opt"]  # type: ignore[operator]
        assert s["restart"] == "unless-stopped"
        args: list[str] = s["command"]  # type: ignore[assignment]
        build_parser().parse_args(["serve", "--port=8500", "--rest_api_port=8501", *args])
        assert _flag(args, "api_keys_file") == "/run/secrets/corolla/api-keys"
        assert set((_flag(args, "auth_open_endpoints") or "").split(",")) == {"health", "metrics"}
        assert _flag(args, "allowed_model_roots") == _flag(args, "model_cache_dir")
        env: dict[str, str] = s["environment"]  # type: ignore[assignment]
        assert env["COROLLA_CPUS"] == "1"
        ports: list[str] = s["ports"]  # type: ignore[assignment]
        assert all(p.startswith("127.0.0.1:") for p in ports), "loopback only"
        # The secrets directory is mounted whole: editing the file rotates the keys.
        volumes: list[str] = s["volumes"]  # type: ignore[assignment]
        assert any(v.endswith(":/run/secrets/corolla:ro") for v in volumes)
    lb_ports: list[str] = services["lb"]["ports"]  # type: ignore[assignment]
    assert all(p.startswith("127.0.0.1:") for p in lb_ports)


def test_models_config_names_the_store() -> None:
    (m,) = parse_model_config_text((COMPOSE / "config" / "models.config").read_text())
    assert m.base_path == "s3://models/flowers"
    seed: list[str] = _services()["seed"]["command"]  # type: ignore[assignment]
    assert "s3://models/flowers" in seed[0]


def test_haproxy_balances_checks_and_retries() -> None:
    cfg = (COMPOSE / "haproxy.cfg").read_text()
    for backend, port in (("corolla_rest", 8501), ("corolla_grpc", 8500)):
        block = re.split(rf"^backend {backend}$", cfg, flags=re.M)[1].split("\n\n", 1)[0]
        assert "http-check send meth GET uri /v2/health/ready" in block
        servers = re.findall(r"^\s+server (\S+) (\S+):(\d+)", block, re.M)
        assert [(s, h, int(p)) for s, h, p in servers] == [(r, r, port) for r in REPLICAS]
    assert re.search(r"retry-on .*conn-failure.*empty-response", cfg)
    assert "option redispatch" in cfg
    assert "proto h2 check port 8501 check-proto h1" in cfg  # gRPC over h2, checks over h1
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy not installed: configuration not checked by haproxy -c")
    out = subprocess.run([haproxy, "-c", "-f", str(COMPOSE / "haproxy.cfg")],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
