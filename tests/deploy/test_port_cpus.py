"""What the platform gives the container reaches the server: ``$PORT`` and the CPU count.

- ``$PORT`` (Cloud Run, Knative, Heroku) is the REST port when ``--rest_api_port`` is not given;
  an explicit flag wins; a PORT that is the gRPC port is refused with a hint.
- ``COROLLA_CPUS`` (the pod's CPU request through the Downward API) and ``--cpus`` lower
  :func:`corolla.cpus.available_cpus`, never above what the affinity mask and quota allow.
- The image's entrypoint and healthcheck honour both, run here without Docker: once with a
  stand-in ``corolla`` that prints its arguments, once with the real server on loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from corolla_harness import free_port

from corolla.cli import build_parser
from corolla.cpus import CPUS_ENV, available_cpus, detected_cpus, parse_cpus
from corolla.demo_model import write_demo_version
from corolla.errors import CorollaError
from corolla.serve_options import apply_cpus, rest_api_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _args(*flags: str) -> object:
    return build_parser().parse_args(["serve", *flags])


# ---- PORT ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "env", "port"), [
    ([], {}, 8501),
    ([], {"PORT": "8080"}, 8080),
    ([], {"PORT": " 9000 "}, 9000),
    ([], {"PORT": ""}, 8501),                            # set but empty: not set
    (["--rest_api_port=7000"], {"PORT": "8080"}, 7000),  # explicit flag wins
    (["--rest_api_port=0"], {"PORT": "8080"}, 0),
    (["--port=8500"], {"PORT": "8500"}, None),           # the gRPC port: refused
    (["--port=8500", "--rest_api_port=8501"], {"PORT": "8500"}, 8501),  # Cloud Run h2c
    ([], {"PORT": "http"}, None),
    ([], {"PORT": "70000"}, None),
    ([], {"PORT": "0"}, None),
])  # fmt: skip
def test_rest_port_from_flag_port_or_default(
    flags: list[str], env: dict[str, str], port: int | None
) -> None:
    args = _args(*flags)
    if port is None:
        with pytest.raises(CorollaError, match="PORT"):
            rest_api_port(args, env)
    else:
        assert rest_api_port(args, env) == port


def test_rest_port_equal_to_grpc_port_by_flags_is_refused() -> None:
    with pytest.raises(CorollaError, match="gRPC port"):
        rest_api_port(_args("--port=9000", "--rest_api_port=9000"), {})


# ---- CPUs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("2", 2.0), ("1.5", 1.5), ("500m", 0.5), (" 250m ", 0.25), ("1000m", 1.0), ("0.1", 0.1),
])  # fmt: skip
def test_parse_cpus(text: str, value: float) -> None:
    assert parse_cpus(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "0", "-1", "m", "two", "nan", "inf", "1.5x", "0m"])
def test_parse_cpus_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpus(text)


def test_available_cpus_follows_cpus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    detected = detected_cpus()
    monkeypatch.delenv(CPUS_ENV, raising=False)
    assert available_cpus() == detected
    monkeypatch.setenv(CPUS_ENV, "1")
    assert available_cpus() == 1
    monkeypatch.setenv(CPUS_ENV, "250m")  # a quarter CPU still gets one thread
    assert available_cpus() == 1
    monkeypatch.setenv(CPUS_ENV, "1000m")
    assert available_cpus() == 1
    # Never more than the affinity mask / quota allows.
    monkeypatch.setenv(CPUS_ENV, str(detected + 64))
    assert available_cpus() == detected
    if detected >= 2:
        monkeypatch.setenv(CPUS_ENV, "1.5")  # rounded up, like the CPU quota
        assert available_cpus() == 2
    monkeypatch.setenv(CPUS_ENV, "garbage")  # ignored here; `corolla serve` refuses it
    assert available_cpus() == detected


def test_cpus_flag_sets_the_env_and_sizes_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from corolla.serve_options import build_server_options

    environ: dict[str, str] = {}
    apply_cpus(_args("--cpus=1"), environ)
    assert environ == {CPUS_ENV: "1"}
    monkeypatch.setenv(CPUS_ENV, "1")
    opts = build_server_options(_args(), {})
    batching = opts.batching  # type: ignore[attr-defined]
    assert batching.num_batch_threads == 1
    assert opts.inline_requests  # type: ignore[attr-defined]  # one core: inline
    with pytest.raises(CorollaError, match="COROLLA_CPUS"):
        apply_cpus(_args("--cpus=zero"), {})
    with pytest.raises(CorollaError, match="COROLLA_CPUS"):
        apply_cpus(_args(), {CPUS_ENV: "-2"})


# ---- the image's entrypoint, without Docker --------------------------------------------------


def _entrypoint_args(tmp_path: Path, *args: str, env: dict[str, str]) -> list[str]:
    if shutil.which("sh") is None:
        pytest.skip("needs /bin/sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "corolla"
    fake.write_text('#!/bin/sh\nfor a; do echo "$a"; done\n')
    fake.chmod(0o755)
    out = subprocess.run(
        ["sh", str(DEPLOY / "docker" / "entrypoint.sh"), *args],
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "MODEL_NAME": "m",
             "MODEL_BASE_PATH": str(tmp_path), **env},
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout.splitlines()


def test_entrypoint_leaves_the_rest_port_to_port(tmp_path: Path) -> None:
    assert _entrypoint_args(tmp_path, env={}) == ["serve", "--port=8500", "--rest_api_port=8501"]
    assert _entrypoint_args(tmp_path, env={"PORT": "8080"}) == ["serve", "--port=8500"]
    assert _entrypoint_args(tmp_path, "--rest_api_port=8501", env={"PORT": "8500"}) == [
        "serve", "--port=8500", "--rest_api_port=8501"
    ]  # fmt: skip


@pytest.mark.slow  # a real server process
def test_entrypoint_serves_on_port_sized_by_cpus(tmp_path: Path) -> None:
    """The real server through the real entrypoint: REST on $PORT, pools for COROLLA_CPUS."""
    if shutil.which("sh") is None:
        pytest.skip("needs /bin/sh")
    write_demo_version(tmp_path / "models" / "colors", 1, size=16)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    corolla = bin_dir / "corolla"
    corolla.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m corolla "$@"\n')
    corolla.chmod(0o755)
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "MODEL_NAME": "colors", "MODEL_BASE_PATH": str(tmp_path / "models"),
           "PORT": str(port), CPUS_ENV: "1"}  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["sh", str(DEPLOY / "docker" / "entrypoint.sh"), f"--port={grpc_port}",
             "--host=127.0.0.1", "--file_system_poll_wait_seconds=0"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = (
                    httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code
                    == 200
                )
            except httpx.TransportError:
                ready = False
            if ready:
                break
            time.sleep(0.2)
        text = log.read_text()
        assert ready, text
        assert f"REST API port {port} from $PORT" in text
        assert "sizing thread pools for 1 CPU(s)" in text
        # The image's HEALTHCHECK follows $PORT too.
        check = subprocess.run(
            [sys.executable, str(DEPLOY / "docker" / "healthcheck.py")],
            env={**os.environ, "PORT": str(port)}, capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
