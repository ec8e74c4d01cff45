"""Fixtures that run ``python -m corolla serve`` as a real process on loopback ports.

Readiness is awaited by polling ``GET /v1/models/<name>`` (bounded) until a version is
AVAILABLE. The process writes its log to a file; failures show its tail. Teardown sends SIGTERM
and expects the process to exit (0) promptly: a hung shutdown fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def poll(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``fn`` until it returns something other than None or False, for at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Corolla:
    """One ``corolla serve`` process and an HTTP client for its REST port."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.rest_port, self.grpc_port = free_ports(2)
        self.log_path = workdir / f"corolla-{self.rest_port}.log"
        base_env = {
            k: v for k, v in os.environ.items() if k not in ("MODEL_NAME", "MODEL_BASE_PATH")
        }
        self.cmd = [
            sys.executable,
            "-m",
            "corolla",
            "serve",
            "--host=127.0.0.1",
            f"--rest_api_port={self.rest_port}",
            f"--port={self.grpc_port}",
            *args,
        ]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env={**base_env, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)

    # ---- HTTP --------------------------------------------------------------------------------

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)

    def status(self, name: str) -> dict[str, dict[str, Any]] | None:
        """Version -> status entry of GET /v1/models/<name>, or None when it is not 200."""
        try:
            r = self.get(f"/v1/models/{name}")
        except httpx.TransportError:
            return None
        if r.status_code != 200:
            return None
        return {s["version"]: s for s in r.json()["model_version_status"]}

    def states(self, name: str) -> dict[str, str]:
        return {v: s["state"] for v, s in (self.status(name) or {}).items()}

    # ---- waiting -----------------------------------------------------------------------------

    def wait_until(
        self, fn: Callable[[], T | None], what: str, timeout: float = START_TIMEOUT
    ) -> T:
        def check() -> T | None:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"corolla exited ({self.proc.returncode}) while waiting for {what}:\n"
                    f"{self.log_tail()}"
                )
            return fn()

        try:
            return poll(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log_tail()}") from None

    def wait_available(
        self, name: str, version: str | None = None, timeout: float = START_TIMEOUT
    ) -> None:
        def ready() -> bool:
            states = self.states(name)
            if version is None:
                return "AVAILABLE" in states.values()
            return states.get(version) == "AVAILABLE"

        self.wait_until(ready, f"{name} {version or ''} AVAILABLE", timeout)

    def wait_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        self.wait_until(lambda: text in self.log(), f"{text!r} in the log", timeout)

    # ---- lifecycle ---------------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 4000) -> str:
        return self.log()[-n:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait; a process that does not exit in time is killed and reported."""
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"corolla did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}"
                ) from None
        return self.proc.returncode


StartCorolla = Callable[..., Corolla]


@contextlib.contextmanager
def corolla_servers(workdir: Path) -> Iterator[StartCorolla]:
    started: list[Corolla] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait_for: tuple[str, ...] = (),
        fake_runtime: bool = False,
    ) -> Corolla:
        extra = dict(env or {})
        if fake_runtime:
            extra["COROLLA_ENABLE_FAKE_RUNTIME"] = "1"
        server = Corolla(list(args), workdir, extra)
        started.append(server)
        for name in wait_for:
            server.wait_available(name)
        return server

    try:
        yield start
    finally:
        problems = []
        for server in started:
            try:
                server.stop()
            except AssertionError as exc:
                problems.append(str(exc))
        if problems:
            raise AssertionError("\n\n".join(problems))


@pytest.fixture
def start_corolla(tmp_path: Path) -> Iterator[StartCorolla]:
    """Start ``corolla serve`` processes for one test; all are stopped at teardown."""
    with corolla_servers(tmp_path) as start:
        yield start


@pytest.fixture(scope="session")
def servers_in() -> Callable[[Path], contextlib.AbstractContextManager[StartCorolla]]:
    """``with servers_in(workdir) as start:`` for fixtures of a wider scope."""
    return corolla_servers


def _models_config(*models: dict[str, Any]) -> str:
    """A models.config (ModelServerConfig text format) for ``models``.

    Each model: name, base_path, and optionally policy ("all", ("latest", n) or ("specific",
    [versions])), labels ({label: version}) and platform.
    """
    lines = ["model_config_list {"]
    for m in models:
        lines.append("  config {")
        lines.append(f'    name: "{m["name"]}"')
        lines.append(f'    base_path: "{m["base_path"]}"')
        if m.get("platform"):
            lines.append(f'    model_platform: "{m["platform"]}"')
        policy = m.get("policy")
        if policy == "all":
            lines.append("    model_version_policy { all {} }")
        elif isinstance(policy, tuple) and policy[0] == "latest":
            lines.append(f"    model_version_policy {{ latest {{ num_versions: {policy[1]} }} }}")
        elif isinstance(policy, tuple) and policy[0] == "specific":
            versions = " ".join(f"versions: {v}" for v in policy[1])
            lines.append(f"    model_version_policy {{ specific {{ {versions} }} }}")
        for label, version in (m.get("labels") or {}).items():
            lines.append(f'    version_labels {{ key: "{label}" value: {version} }}')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _write_config(path: Path, text: str) -> None:
    """Replace a config file atomically, as a ConfigMap update or an editor's save does."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="session")
def models_config() -> Callable[..., str]:
    return _models_config


@pytest.fixture(scope="session")
def write_config() -> Callable[[Path, str], None]:
    return _write_config


@pytest.fixture(scope="session")
def wait() -> Callable[..., Any]:
    """``wait(fn, timeout, what)``: poll ``fn`` until it returns a true value (bounded)."""
    return poll
