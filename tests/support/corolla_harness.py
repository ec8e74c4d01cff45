"""The one harness for real ``corolla serve`` processes on loopback, and free ports.

Every end-to-end test starts its servers through :func:`corolla_process` (or the e2e fixtures
built on it): ``python -m corolla serve`` on two free loopback ports, its output in a log file
whose tail every failure shows. Start-up is awaited on an event where there is one: the
server's gRPC health Watch stream turns SERVING once every model is AVAILABLE (``wait="grpc"``).
Servers started with TLS, API keys or models meant not to be ready are awaited on a REST path
instead (``wait="/healthz"``), polled with a bound. Teardown sends SIGTERM, as Kubernetes does,
and fails the test when the process does not exit in time: a hung shutdown is a bug.
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

T = TypeVar("T")

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together, so they differ)."""
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


def free_port() -> int:
    return free_ports(1)[0]


def poll(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``fn`` until it returns something other than None or False, for at most ``timeout``
    seconds (for conditions that no event announces: a file, a process's log)."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class CorollaProcess:
    """One ``corolla serve`` process, with an HTTP client for its REST port."""

    def __init__(self, args: list[str], workdir: Path, *, env: dict[str, str] | None = None,
                 fake_runtime: bool = False, scheme: str = "http",
                 client_kw: dict[str, Any] | None = None) -> None:
        self.rest_port, self.grpc_port = free_ports(2)
        self.workdir = workdir
        self.log_path = workdir / f"corolla-{self.rest_port}.log"
        self.scheme = scheme
        self.client_kw = client_kw or {}
        self.cmd = [sys.executable, "-m", "corolla", "serve", "--host=127.0.0.1",
                    f"--rest_api_port={self.rest_port}", f"--port={self.grpc_port}", *args]
        # The tensorflow/serving image's variables would pick the model: not the test's.
        base = {k: v for k, v in os.environ.items() if k not in ("MODEL_NAME", "MODEL_BASE_PATH")}
        extra = {"COROLLA_ENABLE_FAKE_RUNTIME": "1"} if fake_runtime else {}
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                env={**base, "PYTHONUNBUFFERED": "1", **extra, **(env or {})})
        self.http = self.client()

    # ---- addresses and clients ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, **{"timeout": 30, **self.client_kw, **kw})

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

    # ---- the log -----------------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 4000) -> str:
        return self.log()[-n:]

    # ---- waiting -----------------------------------------------------------------------------

    def wait_until(self, fn: Callable[[], T | None], what: str,
                   timeout: float = START_TIMEOUT) -> T:
        def check() -> T | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"corolla exited ({self.proc.returncode}) while waiting "
                                     f"for {what}:\n{self.log_tail()}")
            return fn()

        try:
            return poll(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log_tail()}") from None

    def wait_available(self, name: str, version: str | None = None,
                       timeout: float = START_TIMEOUT) -> None:
        def ready() -> bool:
            states = self.states(name)
            if version is None:
                return "AVAILABLE" in states.values()
            return states.get(version) == "AVAILABLE"

        self.wait_until(ready, f"{name} {version or ''} AVAILABLE", timeout)

    def wait_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        self.wait_until(lambda: text in self.log(), f"{text!r} in the log", timeout)

    def wait_http(self, path: str = "/healthz", timeout: float = START_TIMEOUT,
                  status: int = 200) -> None:
        """Until ``path`` answers ``status`` (servers that gRPC health cannot tell about)."""
        last: list[object] = [None]

        def answered() -> bool:
            try:
                with self.client(timeout=2) as c:
                    r = c.get(path)
            except httpx.TransportError as exc:
                last[0] = exc
                return False
            last[0] = r.status_code
            return r.status_code == status

        try:
            self.wait_until(answered, f"{path} to answer {status}", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n(last answer: {last[0]!r})") from None

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        """Until the gRPC health Watch stream says SERVING (every model AVAILABLE): an event."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            with grpc.insecure_channel(self.grpc_target) as channel:
                grpc.channel_ready_future(channel).result(timeout=timeout)
                stub = health_pb2_grpc.HealthStub(channel)
                for resp in stub.Watch(health_pb2.HealthCheckRequest(service=""),
                                       timeout=timeout):
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    if self.proc.poll() is not None:
                        break
        except (grpc.RpcError, grpc.FutureTimeoutError) as exc:
            raise AssertionError(f"corolla serve did not start ({exc!r}):\n"
                                 f"{self.log_tail()}") from exc
        raise AssertionError(f"corolla serve did not become ready:\n{self.log_tail()}")

    # ---- lifecycle ---------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and the exit status (subprocess.TimeoutExpired past ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait; a process that does not exit in time is killed and reported."""
        self.http.close()
        try:
            return self.terminate(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"corolla did not exit within {timeout}s of SIGTERM:\n"
                                 f"{self.log_tail()}") from None


# What the e2e fixture ``start_corolla`` is: start(*args, env=..., wait_for=(models...),
# fake_runtime=...) -> a server, stopped at teardown.
StartCorolla = Callable[..., CorollaProcess]


@contextlib.contextmanager
def corolla_process(args: list[str], workdir: Path, *, wait: str | None = "grpc",
                    timeout: float = START_TIMEOUT, **kw: Any) -> Iterator[CorollaProcess]:
    """A server for the ``with`` block. ``wait``: "grpc" (health SERVING), a REST path that
    must answer 200, or None. Other keywords: :class:`CorollaProcess`'s."""
    server = CorollaProcess(args, workdir, **kw)
    try:
        if wait == "grpc":
            server.wait_serving(timeout)
        elif wait is not None:
            server.wait_http(wait, timeout)
        yield server
    finally:
        server.stop()
