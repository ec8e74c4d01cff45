"""Metrics and logs of a real server after known traffic (REST and gRPC).

TF Serving's metric names and labels at --monitoring_config_file's path and at /metrics, model
load failures, JSON logs with request ids, access log and load events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from corolla_harness import CorollaProcess
from ops_process import (
    fake_model,
    grpc_predict_request,
    predict_body,
    prediction_stub,
    scrape,
    serve,
)

pytestmark = pytest.mark.slow

CONFIG = """
model_config_list {
  config { name: "m" base_path: "models/m" }
  config { name: "broken" base_path: "models/broken" }
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorollaProcess]:
    work = tmp_path_factory.mktemp("metrics")
    fake_model(work / "models" / "m", 1)
    fake_model(work / "models" / "broken", 1, fail="this version is broken")
    (work / "models.config").write_text(CONFIG)
    (work / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    # Explicit batching parameters: with Corolla's defaults a model as cheap as the fake one
    # runs inline, without a batcher, and the batching metrics below would stay empty.
    (work / "batching.config").write_text("max_batch_size { value: 32 }\n")
    with serve(
        [
            "--model_config_file=models.config",
            "--enable_batching",
            "--batching_parameters_file=batching.config",
            "--monitoring_config_file=monitoring.config",
            "--max_num_load_retries=0",
            "--log_format=json",
            "--access_log",
        ],
        work,
    ) as s:
        yield s


def test_metrics_after_known_traffic(server: CorollaProcess) -> None:
    with server.client() as c:
        for _ in range(3):
            assert c.post("/v1/models/m:predict", json=predict_body()).status_code == 200
        assert c.post("/v1/models/m:predict", json={"instances": "x"}).status_code == 400
        with grpc.insecure_channel(server.grpc_target) as ch:
            stub = prediction_stub(ch)
            for _ in range(2):
                stub.Predict(grpc_predict_request("m", rows=2), timeout=10)
            with pytest.raises(grpc.RpcError) as e:
                stub.Predict(grpc_predict_request("nope"), timeout=10)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
        # A gRPC error reaches the client as soon as the servicer aborts, a moment before the
        # interceptor counts it: wait for that count.
        unknown = ':tensorflow:serving:request_count{model_name="_unknown",status="NOT_FOUND"}'
        server.wait_until(lambda: unknown in scrape(c.get("/metrics").text), unknown, 5)
        tf_path = c.get("/monitoring/prometheus/metrics")
        plain = c.get("/metrics")
    assert tf_path.status_code == plain.status_code == 200
    assert tf_path.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = scrape(tf_path.text)
    # The same families at both paths (series may differ: a gRPC error is counted right after
    # the client has its answer).
    assert {k.split("{")[0] for k in m} == {k.split("{")[0] for k in scrape(plain.text)}
    assert m[':tensorflow:serving:request_count{model_name="m",status="OK"}'] == 5
    assert m[':tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"}'] == 1
    assert m[':tensorflow:serving:request_count{model_name="_unknown",status="NOT_FOUND"}'] == 1
    assert (
        m[
            ':tensorflow:serving:request_latency_count{model_name="m",API="Predict",'
            'entrypoint="REST"}'
        ]
        == 4
    )
    assert (
        m[
            ':tensorflow:serving:request_latency_count{model_name="m",API="Predict",'
            'entrypoint="GRPC"}'
        ]
        == 2
    )
    assert (
        m[':tensorflow:serving:runtime_latency_count{model_name="m",API="Predict",runtime="fake"}']
        == 5
    )
    assert (
        m[':tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="m"}'] == 5
    )
    assert m['corolla_batch_size_sum{model_name="m"}'] == 3 * 1 + 2 * 2
    assert m['corolla_model_versions{model_name="m",state="AVAILABLE"}'] == 1
    assert m['corolla_model_versions{model_name="broken",state="END"}'] == 1
    assert m['corolla_model_load_failures_total{model_name="broken"}'] == 1
    assert m['corolla_model_load_seconds_count{model_name="m",result="ok"}'] == 1
    assert m['corolla_model_ready{model_name="m"}'] == 1
    assert m['corolla_model_ready{model_name="broken"}'] == 0
    assert m["corolla_server_ready"] == 0  # a configured model has nothing AVAILABLE
    assert m['corolla_batch_queue_depth{model_name="m"}'] == 0
    assert m['corolla_inflight_requests{entrypoint="GRPC"}'] == 0
    assert m["process_cpu_seconds_total"] > 0
    assert m["process_resident_memory_bytes"] > 10e6


def test_json_logs_access_log_and_events(server: CorollaProcess) -> None:
    with server.client() as c:
        r = c.post(
            "/v1/models/m:predict", json=predict_body(), headers={"x-request-id": "trace-me-42"}
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-me-42"
    with grpc.insecure_channel(server.grpc_target) as ch:
        prediction_stub(ch).Predict(
            grpc_predict_request("m"), metadata=[("x-request-id", "grpc-trace-7")], timeout=10
        )

    def read_records() -> list[dict[str, object]]:
        return [json.loads(ln) for ln in server.log().splitlines() if ln.startswith("{")]

    server.wait_until(  # the gRPC access record follows the answer
        lambda: any(r.get("request_id") == "grpc-trace-7" for r in read_records()),
        "the gRPC access record", 5)
    records = read_records()
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    access = [
        r
        for r in records
        if r["logger"] == "corolla.access" and r.get("request_id") == "trace-me-42"
    ]
    assert len(access) == 1
    assert access[0]["status"] == 200 and access[0]["model"] == "m"
    assert access[0]["api"] == "Predict" and access[0]["duration_ms"] > 0
    grpc_access = [r for r in records if r.get("request_id") == "grpc-trace-7"]
    assert len(grpc_access) == 1
    assert grpc_access[0]["path"] == "/tensorflow.serving.PredictionService/Predict"
    assert grpc_access[0]["code"] == "OK" and grpc_access[0]["model"] == "m"
    events = {(r.get("event"), r.get("model")) for r in records if r["logger"] == "corolla.events"}
    assert ("model_loaded", "m") in events
    assert ("model_load_failed", "broken") in events


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    fake_model(tmp_path / "m", 1)
    with (
        serve(
            ["--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--enable_metrics=false"],
            tmp_path,
        ) as s,
        s.client() as c,
    ):
        assert c.get("/metrics").status_code == 404
        assert c.get("/monitoring/prometheus/metrics").status_code == 404
