"""Real ``corolla serve`` processes on loopback for the operations tests, and helpers.

Unlike tests/e2e/corolla_process.py (which waits on gRPC health), start-up here is awaited on
the REST port, because these tests also start servers with TLS, API keys or models that are
meant not to be ready yet. The fake runtime is enabled, so that models with chosen load and
inference times can be written in a line (:func:`fake_model`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from corolla.runtimes.fake import write_fake_version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_model(base: Path, version: int = 1, **spec: Any) -> Path:
    """A fake-runtime version: ``outputs = x * 2 + offset``; input shape [-1, 4]."""
    spec.setdefault("labels", ["a", "b", "c", "d"])
    return write_fake_version(base, version, **spec)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    rest_port: int
    grpc_port: int
    log: Path
    scheme: str = "http"
    client_kw: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, **{"timeout": 30, **self.client_kw, **kw})

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def wait_http(
    server: Server, path: str = "/healthz", timeout: float = 60.0, status: int = 200
) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    with server.client(timeout=2) as c:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {server.proc.returncode}:\n{server.log_text()[-4000:]}"
                )
            try:
                r = c.get(path)
                if r.status_code == status:
                    return
                last = r.status_code
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.05)
    raise RuntimeError(
        f"{path} did not answer {status} in {timeout}s (last: {last!r}):\n"
        f"{server.log_text()[-4000:]}"
    )


@contextlib.contextmanager
def serve(
    args: list[str],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    wait: str | None = "/healthz",
    scheme: str = "http",
    client_kw: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> Iterator[Server]:
    rest_port, grpc_port = free_port(), free_port()
    log = workdir / f"corolla-{rest_port}.log"
    cmd = [
        sys.executable,
        "-m",
        "corolla",
        "serve",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        "--host=127.0.0.1",
        *args,
    ]
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COROLLA_ENABLE_FAKE_RUNTIME": "1",
        **(env or {}),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=full_env
        )
    server = Server(
        proc=proc,
        rest_port=rest_port,
        grpc_port=grpc_port,
        log=log,
        scheme=scheme,
        client_kw=client_kw or {},
    )
    try:
        if wait is not None:
            wait_http(server, wait, timeout)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def predict_body(rows: int = 1) -> dict[str, Any]:
    return {"instances": [[1.0, 2.0, 3.0, 4.0]] * rows}


def scrape(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels as written by the server)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def grpc_predict_request(name: str, rows: int = 1) -> Any:
    import numpy as np

    from corolla.protocols import tensor_proto
    from corolla.protos.gen.tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    x = np.tile(np.array([[1, 2, 3, 4]], np.float32), (rows, 1))
    tensor_proto.from_numpy(x, content=True, out=req.inputs["x"])
    return req


def prediction_stub(channel: Any) -> Any:
    from corolla.protos.gen.tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def health_status(channel: Any, service: str = "") -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)
