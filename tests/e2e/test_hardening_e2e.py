"""Issue 22's examples, replayed from outside against a real server process: each gets a 4xx or
INVALID_ARGUMENT, and the server's resident memory does not grow by what the request claimed.
(Header sizes: tests/ops/test_limits_e2e.py; every decoder: tests/fuzz.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from corolla.demo_model import write_demo_version
from corolla.protos.gen import grpc_predict_v2_pb2 as v2pb
from corolla.protos.gen import grpc_predict_v2_pb2_grpc as v2grpc
from corolla.protos.gen.tensorflow.core.framework import types_pb2
from corolla.protos.gen.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

pytestmark = pytest.mark.slow

# The claims below are 1-2 GiB; the server may grow by a fraction of this while answering.
GROWTH = 150 << 20


@pytest.fixture
def server(start_corolla: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    write_demo_version(tmp_path / "colours", 1)
    return start_corolla("--model_name=colours", f"--model_base_path={tmp_path / 'colours'}",
                         wait_for=("colours",))


def _rss(server) -> int:  # type: ignore[no-untyped-def]
    return int(psutil.Process(server.proc.pid).memory_info().rss)


def test_tiny_grpc_predicts_claiming_a_gib(server) -> None:  # type: ignore[no-untyped-def]
    before = _rss(server)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(3):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "colours"
            tp = req.inputs["images"]
            tp.dtype = types_pb2.DT_FLOAT
            tp.tensor_shape.dim.add().size = 1 << 28
            tp.float_val.append(1.0)
            assert req.ByteSize() <= 41
            with pytest.raises(grpc.RpcError) as err:
                stub.Predict(req, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # DT_STRING of shape [0]: no images, not INTERNAL.
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "colours"
        req.inputs["images"].dtype = types_pb2.DT_STRING
        req.inputs["images"].tensor_shape.dim.add().size = 0
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Bytes that are no PredictRequest: INVALID_ARGUMENT, not UNKNOWN.
        raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xff\xff\xff", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        v2 = v2grpc.GRPCInferenceServiceStub(channel)
        for shape in ([1 << 28], [0], [0, 1 << 62]):
            infer = v2pb.ModelInferRequest(model_name="colours")
            infer.inputs.add(name="images", datatype="BYTES", shape=shape)
            infer.raw_input_contents.append(b"\x04\0\0\0abcd")
            with pytest.raises(grpc.RpcError) as err:
                v2.ModelInfer(infer, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, shape
    assert _rss(server) - before < GROWTH


def test_v2_rest_claims(server) -> None:  # type: ignore[no-untyped-def]
    before = _rss(server)
    header = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1 << 28],
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    r = server.post("/v2/models/colours/infer", content=header + b"\x04\0\0\0abcd",
                    headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and "cannot hold" in r.json()["error"]
    for datatype, shape in (("BYTES", [0]), ("BYTES", [0, 1 << 63]), ("FP32", [0, 1 << 63]),
                            ("FP32", [0, 64, 64, 3])):
        r = server.post("/v2/models/colours/infer", json={"inputs": [
            {"name": "images", "datatype": datatype, "shape": shape, "data": []}]})
        assert r.status_code == 400, (shape, r.text)
    r = server.post("/v1/models/colours:predict", json={"instances": []})
    assert r.status_code == 400
    assert _rss(server) - before < GROWTH
