"""Readiness across a slow load, draining on SIGTERM, and SIGTERM under load.

The server answers before its models load and its readiness tells the truth (REST and gRPC
health); on SIGTERM readiness turns false at once while requests are still served for the grace
period, then new connections are refused, in-flight requests finish, the process exits 0. Under
a bounded load run (clients that stop sending when readiness turns false, as a load balancer
does) no request fails.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from ops_process import (
    fake_model,
    grpc_predict_request,
    health_status,
    predict_body,
    prediction_stub,
    serve,
)

pytestmark = pytest.mark.slow

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_readiness_false_until_a_slow_load_finishes(tmp_path: Path) -> None:
    fake_model(tmp_path / "m", 1, load_seconds=3)
    with (
        serve(["--model_name=m", f"--model_base_path={tmp_path / 'm'}"], tmp_path) as s,
        s.client() as c,
        grpc.insecure_channel(s.grpc_target) as ch,
    ):
        # Live at once; not ready while the version loads.
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["not_ready"] == ["m"]
        assert c.get("/v2/health/ready").status_code != 200
        assert c.get("/v2/health/live").status_code == 200
        assert health_status(ch) == NOT_SERVING
        assert c.post("/v1/models/m:predict", json=predict_body()).status_code == 404
        s.wait_http("/readyz", timeout=30)
        assert c.get("/v2/health/ready").status_code == 200
        assert health_status(ch) == SERVING
        assert health_status(ch, "m") == SERVING
        assert c.post("/v1/models/m:predict", json=predict_body()).status_code == 200


def test_sigterm_drains_then_refuses_then_exits_zero(tmp_path: Path) -> None:
    fake_model(tmp_path / "m", 1, predict_seconds=2.0)
    grace = 2.0
    with serve(
        [
            "--model_name=m",
            f"--model_base_path={tmp_path / 'm'}",
            f"--shutdown_grace_seconds={grace}",
            "--drain_timeout_seconds=20",
        ],
        tmp_path,
        wait="/readyz",
    ) as s:
        results: list[int | str] = []

        def slow_request() -> None:
            try:
                with s.client() as c:
                    results.append(c.post("/v1/models/m:predict", json=predict_body()).status_code)
            except httpx.HTTPError as exc:
                results.append(repr(exc))

        def slow_grpc() -> None:
            with grpc.insecure_channel(s.grpc_target) as ch:
                try:
                    prediction_stub(ch).Predict(grpc_predict_request("m"), timeout=20)
                    results.append("grpc ok")
                except grpc.RpcError as exc:
                    results.append(repr(exc))

        early = threading.Thread(target=slow_request)
        early.start()
        time.sleep(0.3)  # that request is in flight
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        with s.client() as c, grpc.insecure_channel(s.grpc_target) as ch:
            # Readiness is false at once; the server still answers during the grace period.
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["draining"] is True
            assert health_status(ch) == NOT_SERVING
            # These start in the grace period and end after the listeners have closed.
            late = [threading.Thread(target=slow_request), threading.Thread(target=slow_grpc)]
            for t in late:
                t.start()
            assert time.monotonic() - t0 < grace
        # After the grace period new connections are refused...
        time.sleep(max(0.0, grace + 0.5 - (time.monotonic() - t0)))
        with pytest.raises(httpx.ConnectError), s.client() as c:
            c.get("/healthz")
        # ...while the requests already in flight finish.
        for t in [early, *late]:
            t.join(20)
        assert sorted(map(str, results)) == ["200", "200", "grpc ok"]
        assert s.proc.wait(20) == 0
    log = s.log()
    assert "shutdown requested" in log and "stopped" in log


def test_sigterm_under_load_loses_no_request(tmp_path: Path) -> None:
    fake_model(tmp_path / "m", 1, predict_seconds=0.01)
    fake_model(tmp_path / "slow", 1, predict_seconds=0.7)
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "m" base_path: "m" } '
        'config { name: "slow" base_path: "slow" } }'
    )
    with serve(
        [
            "--model_config_file=models.config",
            "--shutdown_grace_seconds=1.5",
            "--drain_timeout_seconds=20",
        ],
        tmp_path,
        wait="/readyz",
    ) as s:
        routable = threading.Event()  # the "load balancer": routes while the server is ready
        routable.set()
        ok = [0]
        failures: list[str] = []
        lock = threading.Lock()

        def client_loop(model: str) -> None:
            with s.client() as c:  # keep-alive connections, as real clients use
                while routable.is_set():
                    try:
                        r = c.post(f"/v1/models/{model}:predict", json=predict_body())
                        if r.status_code != 200:
                            raise AssertionError(f"{r.status_code} {r.text}")
                        with lock:
                            ok[0] += 1
                    except Exception as exc:
                        with lock:
                            failures.append(f"{model}: {exc!r}")
                        return

        def balancer() -> None:
            with s.client(timeout=2) as c:
                while c.get("/readyz").status_code == 200:
                    time.sleep(0.05)
            routable.clear()

        threads = [threading.Thread(target=client_loop, args=("m",)) for _ in range(8)]
        # One slow client: inference threads are shared by the models of a server.
        threads.append(threading.Thread(target=client_loop, args=("slow",)))
        lb = threading.Thread(target=balancer)
        for t in [*threads, lb]:
            t.start()
        time.sleep(1.0)
        before = ok[0]
        s.proc.send_signal(signal.SIGTERM)
        for t in [lb, *threads]:
            t.join(30)
        assert not failures, failures
        assert before > 20 and ok[0] > before  # requests completed during the drain too
        assert s.proc.wait(20) == 0
