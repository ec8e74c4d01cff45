"""``--rest_workers 2``: two processes serve the REST and gRPC APIs on their ports, as one server.

A real ``corolla serve`` process with one worker: REST connections and gRPC channels spread over
both processes, every answer is the same, metrics count every process's requests whichever
process answers the scrape, ReloadConfig (received by either process) and the config file reach
every process, a killed worker is replaced, and SIGTERM stops them all.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest

from corolla.demo_model import write_demo_version
from corolla.protocols.tensor_proto import from_numpy
from corolla.protos.gen.tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

pytestmark = pytest.mark.slow


def _scrape(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def _workers(server: Any) -> list[psutil.Process]:
    """The REST worker processes (multiprocessing's resource tracker is not one)."""
    out = []
    for p in psutil.Process(server.proc.pid).children():
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue  # a worker that just died, not yet reaped
    return out


def _fresh_calls(server: Any, path: str, body: dict[str, Any], n: int) -> list[httpx.Response]:
    """``n`` requests, each on a new connection (the kernel picks a process per connection)."""
    out = []
    for _ in range(n):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            out.append(c.post(path, json=body))
    return out


BODY = {"instances": [[[[0.9, 0.1, 0.1]] * 64] * 64]}


def _scrapes_counting(server: Any, n: int, scrapes: int = 6) -> list[dict[str, float]]:
    """Metrics scraped on ``scrapes`` new connections (any process may answer), each checked
    to count ``n`` successful colours predictions."""
    out = []
    for _ in range(scrapes):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            m = _scrape(c.get("/metrics").text)
        assert m[':tensorflow:serving:request_count{model_name="colours",status="OK"}'] == n
        out.append(m)
    return out


def _own_channel(server: Any) -> grpc.Channel:
    """A channel with its own connection (gRPC shares one between channels by default)."""
    return grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                                 options=[("grpc.use_local_subchannel_pool", 1)])


def _server_side_owner(server: Any, pids: set[int], client_port: int) -> int | None:
    """The server process holding the gRPC connection whose client end is ``client_port``."""
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if (conn.laddr.port == server.grpc_port and conn.raddr
                    and conn.raddr.port == client_port and conn.status == "ESTABLISHED"):
                return pid
    return None


def _client_ports(grpc_port: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == grpc_port and c.status == "ESTABLISHED"}


def _grpc_predict(channel: grpc.Channel, model: str, pixels: Any) -> Any:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    from_numpy(pixels, content=True, out=req.inputs["images"])
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=30)


@pytest.fixture
def two(tmp_path: Path, start_corolla: Any) -> Any:
    write_demo_version(tmp_path / "models" / "colours", 1)
    write_demo_version(tmp_path / "models" / "tiny", 3, size=16)
    server = start_corolla("--model_name=colours", "--model_base_path=models/colours",
                           "--rest_workers=2", "--file_system_poll_wait_seconds=0.5")
    server.wait_available("colours")
    server.wait_log("REST worker 1 listening")
    return server


def test_two_processes_share_the_port_and_count_as_one(two: Any) -> None:
    workers = _workers(two)
    assert len(workers) == 1
    pids = {two.proc.pid, workers[0].pid}
    clients = [httpx.Client(base_url=two.url, timeout=30) for _ in range(24)]
    try:
        answers = [c.post("/v1/models/colours:predict", json=BODY) for c in clients]
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        assert len({r.text for r in answers}) == 1  # same model, same answer everywhere
        holders: set[int] = set()
        for pid in pids:
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.laddr.port == two.rest_port and conn.status == "ESTABLISHED":
                    holders.add(pid)
        assert holders == pids, "both processes should hold some of the 24 connections"
    finally:
        for c in clients:
            c.close()
    # Every scrape, whichever process answers it, counts all 24 predictions.
    for m in _scrapes_counting(two, 24):
        assert m["corolla_rest_processes"] == 2
        assert m['corolla_model_ready{model_name="colours"}'] == 1


def test_reload_config_reaches_every_process(two: Any) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{two.grpc_port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)

        def reload(*names: str) -> None:
            req = model_management_pb2.ReloadConfigRequest()
            for name in names:
                req.config.model_config_list.config.add(name=name, base_path=f"models/{name}")
            resp = stub.HandleReloadConfigRequest(req, timeout=60)
            assert resp.status.error_code == 0, resp.status.error_message

        reload("colours", "tiny")
        tiny = {"instances": [[[[0.1, 0.9, 0.1]] * 16] * 16]}
        # ReloadConfig returned: every process serves tiny now, on any new connection.
        answers = _fresh_calls(two, "/v1/models/tiny:predict", tiny, 16)
        assert [r.status_code for r in answers] == [200] * 16, [r.text for r in answers]
        reload("colours")
        answers = _fresh_calls(two, "/v1/models/tiny:predict", tiny, 16)
        assert [r.status_code for r in answers] == [404] * 16
        # A model that cannot load fails the RPC with its error.
        req = model_management_pb2.ReloadConfigRequest()
        req.config.model_config_list.config.add(name="nope", base_path="models/nope")
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(req, timeout=60)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_config_file_changes_reach_every_process(tmp_path: Path, start_corolla: Any,
                                                 models_config: Any, write_config: Any,
                                                 wait: Any) -> None:
    write_demo_version(tmp_path / "models" / "colours", 1)
    write_demo_version(tmp_path / "models" / "tiny", 3, size=16)
    cfg = tmp_path / "models.config"
    write_config(cfg, models_config({"name": "colours", "base_path": "models/colours"}))
    server = start_corolla(f"--model_config_file={cfg}", "--rest_workers=2",
                           "--model_config_file_poll_wait_seconds=0.3",
                           wait_for=("colours",))
    server.wait_log("REST worker 1 listening")
    write_config(cfg, models_config({"name": "colours", "base_path": "models/colours"},
                                    {"name": "tiny", "base_path": "models/tiny"}))
    tiny = {"instances": [[[[0.1, 0.9, 0.1]] * 16] * 16]}

    def everywhere() -> bool:
        answers = _fresh_calls(server, "/v1/models/tiny:predict", tiny, 12)
        return all(r.status_code == 200 for r in answers)

    wait(everywhere, 30, "tiny served by every process")


def test_a_killed_worker_is_replaced(two: Any, wait: Any) -> None:
    (old,) = _workers(two)
    os.kill(old.pid, signal.SIGKILL)
    two.wait_log("REST worker 1 (pid")
    new = wait(lambda: [p for p in _workers(two) if p.pid != old.pid] or None, 30,
               "a new REST worker")
    two.wait_until(lambda: two.log().count("REST worker 1 listening") >= 2, "it listens")
    answers = _fresh_calls(two, "/v1/models/colours:predict", BODY, 16)
    assert [r.status_code for r in answers] == [200] * 16
    assert two.stop() == 0
    assert not new[0].is_running() or new[0].status() == psutil.STATUS_ZOMBIE


def test_a_hung_worker_is_killed_and_replaced(tmp_path: Path, start_corolla: Any,
                                              wait: Any) -> None:
    # A worker that stops running (SIGSTOP stands for a loop stuck in native code) keeps its
    # share of new connections waiting; the watchdog kills it and a new worker takes over.
    write_demo_version(tmp_path / "models" / "colours", 1)
    server = start_corolla("--model_name=colours", "--model_base_path=models/colours",
                           "--rest_workers=2", "--rest_worker_watchdog_seconds=2")
    server.wait_available("colours")
    server.wait_log("REST worker 1 listening")
    (old,) = _workers(server)
    os.kill(old.pid, signal.SIGSTOP)
    server.wait_log("its event loop has not run for")
    wait(lambda: [p for p in _workers(server) if p.pid != old.pid] or None, 30,
         "a new REST worker")
    server.wait_until(lambda: server.log().count("REST worker 1 listening") >= 2, "it listens")
    answers = _fresh_calls(server, "/v1/models/colours:predict", BODY, 16)
    assert [r.status_code for r in answers] == [200] * 16
    assert server.stop() == 0


def test_grpc_channels_spread_over_both_processes(two: Any) -> None:
    import numpy as np

    pids = {two.proc.pid, _workers(two)[0].pid}
    pixels = np.full((1, 64, 64, 3), [0.9, 0.1, 0.1], dtype=np.float32)
    channels = [_own_channel(two) for _ in range(24)]
    try:
        answers = [_grpc_predict(ch, "colours", pixels) for ch in channels]
        assert len({a.SerializeToString(deterministic=True) for a in answers}) == 1
        holders = {_server_side_owner(two, pids, port) for port in _client_ports(two.grpc_port)}
        assert holders == pids, "both processes should hold some of the 24 gRPC connections"
    finally:
        for ch in channels:
            ch.close()
    # Counted once each, whichever process served them and whichever answers the scrape.
    _scrapes_counting(two, 24)


def test_reload_config_received_by_the_worker_reaches_every_process(two: Any) -> None:
    (worker,) = _workers(two)
    pids = {two.proc.pid, worker.pid}
    # Open channels until one's connection is held by the worker (the kernel picks).
    opened: list[grpc.Channel] = []
    on_worker = None
    try:
        for _ in range(64):
            before = _client_ports(two.grpc_port)
            ch = _own_channel(two)
            opened.append(ch)
            status = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(
                    model_spec={"name": "colours"}), timeout=30)
            assert status.model_version_status[0].state == 30  # AVAILABLE
            (port,) = _client_ports(two.grpc_port) - before
            if _server_side_owner(two, pids, port) == worker.pid:
                on_worker = ch
                break
        assert on_worker is not None, "no gRPC connection landed on the worker"
        stub = model_service_pb2_grpc.ModelServiceStub(on_worker)
        req = model_management_pb2.ReloadConfigRequest()
        for name in ("colours", "tiny"):
            req.config.model_config_list.config.add(name=name, base_path=f"models/{name}")
        assert stub.HandleReloadConfigRequest(req, timeout=60).status.error_code == 0
        tiny = {"instances": [[[[0.1, 0.9, 0.1]] * 16] * 16]}
        answers = _fresh_calls(two, "/v1/models/tiny:predict", tiny, 16)
        assert [r.status_code for r in answers] == [200] * 16, [r.text for r in answers]
        # A model that cannot load fails the RPC on the worker with the main process's error.
        bad = model_management_pb2.ReloadConfigRequest()
        bad.config.model_config_list.config.add(name="nope", base_path="models/nope")
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(bad, timeout=60)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        for ch in opened:
            ch.close()
