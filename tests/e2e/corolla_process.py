"""Run ``corolla serve`` as a real process on loopback for end-to-end tests.

Readiness is awaited on the server's own gRPC health Watch stream (an event, not a sleep loop);
the process's output goes to a log file whose tail is shown when start-up fails. Stopping sends
SIGTERM, as Kubernetes does, and expects a clean exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    rest_port: int
    grpc_port: int
    log: Path

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def _wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        stub = health_pb2_grpc.HealthStub(channel)
        for resp in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=timeout):
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return
            if proc.poll() is not None:
                break
    raise RuntimeError("server did not become ready")


@contextlib.contextmanager
def corolla_serve(args: list[str], workdir: Path, *, timeout: float = 60.0
                  ) -> Iterator[ServerProcess]:
    rest_port, grpc_port = free_port(), free_port()
    log = workdir / f"corolla-{grpc_port}.log"
    cmd = [sys.executable, "-m", "corolla", "serve", f"--port={grpc_port}",
           f"--rest_api_port={rest_port}", "--host=127.0.0.1", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    server = ServerProcess(proc=proc, rest_port=rest_port, grpc_port=grpc_port, log=log)
    try:
        try:
            _wait_serving(server.grpc_target, proc, timeout)
        except (grpc.RpcError, grpc.FutureTimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"corolla serve did not start ({exc!r}):\n"
                               f"{server.log_tail()}") from exc
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired as exc:
                proc.kill()
                proc.wait()
                raise AssertionError(  # a hung shutdown must fail the run
                    f"corolla serve did not exit within 30 s of SIGTERM:\n{server.log_tail()}"
                ) from exc
