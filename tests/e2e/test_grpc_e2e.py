"""End to end over TF Serving's gRPC API: a real ``corolla serve`` process, our generated stubs.

Models: ``colours`` (the demo classifier, 64x64) from a models.config; ``tiny`` (the same
classifier at 16x16) is added and removed with HandleReloadConfigRequest.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from corolla_harness import CorollaProcess, corolla_process
from PIL import Image

from corolla.client import Client
from corolla.demo_model import write_demo_version
from corolla.protocols import tensor_proto
from corolla.protos.gen.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

pytestmark = pytest.mark.slow

MODELS_CONFIG = """
model_config_list {
  config { name: "colours" base_path: "models/colours" model_platform: "onnx" }
}
"""


def jpeg(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (120, 90), rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorollaProcess]:
    work = tmp_path_factory.mktemp("grpc-e2e")
    write_demo_version(work / "models" / "colours", 1, size=64)
    write_demo_version(work / "models" / "tiny", 3, size=16)
    (work / "models.config").write_text(MODELS_CONFIG)
    with corolla_process(["--model_config_file=models.config", "--enable_batching=false"],
                       work) as s:
        yield s


@pytest.fixture(scope="module")
def channel(server: CorollaProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture
def predictions(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def _predict(name: str, alias: str, value: np.ndarray) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    tensor_proto.from_numpy(value, content=value.dtype != object, out=req.inputs[alias])
    return req


def test_predict_float_tensor(predictions: prediction_service_pb2_grpc.PredictionServiceStub
                              ) -> None:
    x = np.full((2, 64, 64, 3), 0.0, np.float32)
    x[0, ..., 2] = 0.95  # blue
    x[1] = 0.99  # white
    resp = predictions.Predict(_predict("colours", "images", x), timeout=10)
    assert resp.model_spec.name == "colours" and resp.model_spec.version.value == 1
    scores = tensor_proto.to_numpy(resp.outputs["probabilities"])
    assert scores.shape == (2, 5) and scores.argmax(axis=1).tolist() == [2, 3]


def test_predict_encoded_images(predictions: prediction_service_pb2_grpc.PredictionServiceStub
                                ) -> None:
    images = np.array([jpeg((230, 20, 20)), jpeg((20, 200, 20)), jpeg((3, 3, 3))], dtype=object)
    resp = predictions.Predict(_predict("colours", "images", images), timeout=10)
    scores = tensor_proto.to_numpy(resp.outputs["probabilities"])
    assert scores.argmax(axis=1).tolist() == [0, 1, 4]


def test_classify(predictions: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "colours"
    for rgb in ((20, 20, 220), (250, 250, 250)):
        ex = req.input.example_list.examples.add()
        ex.features.feature["image"].bytes_list.value.append(jpeg(rgb))
    resp = predictions.Classify(req, timeout=10)
    assert [c.classes[0].label for c in resp.result.classifications] == ["blue", "white"]


def test_get_model_metadata(predictions: prediction_service_pb2_grpc.PredictionServiceStub
                            ) -> None:
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "colours"
    resp = predictions.GetModelMetadata(req, timeout=10)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sigs)
    sd = sigs.signature_def["serving_default"]
    assert sd.method_name == "tensorflow/serving/predict"
    assert [d.size for d in sd.outputs["probabilities"].tensor_shape.dim] == [-1, 5]


def test_get_model_status(models: model_service_pb2_grpc.ModelServiceStub) -> None:
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "colours"
    resp = models.GetModelStatus(req, timeout=10)
    (status,) = resp.model_version_status
    assert status.version == 1 and status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0


@pytest.mark.parametrize(("request_", "code", "detail"), [
    (_predict("nope", "images", np.zeros((1, 64, 64, 3), np.float32)),
     grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    (_predict("colours", "images", np.zeros((1, 32, 32, 3), np.float32)),
     grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    (_predict("colours", "images", np.array([b"GIF89a broken"], dtype=object)),
     grpc.StatusCode.INVALID_ARGUMENT, "image 0"),
    (_predict("colours", "pixels", np.zeros((1, 64, 64, 3), np.float32)),
     grpc.StatusCode.INVALID_ARGUMENT, "pixels"),
])
def test_errors(predictions: prediction_service_pb2_grpc.PredictionServiceStub,
                request_: predict_pb2.PredictRequest, code: grpc.StatusCode, detail: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        predictions.Predict(request_, timeout=10)
    assert info.value.code() == code and detail in (info.value.details() or "")


def _reload(models: model_service_pb2_grpc.ModelServiceStub, *names: str) -> None:
    req = model_management_pb2.ReloadConfigRequest()
    for name in names:
        req.config.model_config_list.config.add(name=name, base_path=f"models/{name}",
                                                model_platform="onnx")
    resp = models.HandleReloadConfigRequest(req, timeout=60)
    assert resp.status.error_code == 0


def test_reload_config_adds_and_removes_a_model(
        predictions: prediction_service_pb2_grpc.PredictionServiceStub,
        models: model_service_pb2_grpc.ModelServiceStub) -> None:
    tiny = np.zeros((1, 16, 16, 3), np.float32)
    _reload(models, "colours", "tiny")
    resp = predictions.Predict(_predict("tiny", "images", tiny), timeout=10)
    assert resp.model_spec.version.value == 3
    _reload(models, "colours")
    with pytest.raises(grpc.RpcError) as info:
        predictions.Predict(_predict("tiny", "images", tiny), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "tiny"
    with pytest.raises(grpc.RpcError) as info:
        models.GetModelStatus(status, timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    predictions.Predict(_predict("colours", "images", np.zeros((1, 64, 64, 3), np.float32)),
                        timeout=10)


def test_reload_config_with_a_broken_path_fails(
        models: model_service_pb2_grpc.ModelServiceStub, server: CorollaProcess) -> None:
    req = model_management_pb2.ReloadConfigRequest()
    req.config.model_config_list.config.add(name="colours", base_path="models/colours")
    req.config.model_config_list.config.add(name="ghost", base_path="models/ghost")
    with pytest.raises(grpc.RpcError) as info:
        models.HandleReloadConfigRequest(req, timeout=30)
    assert info.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED)
    _reload(models, "colours")


def test_python_client_grpc(server: CorollaProcess) -> None:
    with Client("127.0.0.1", rest_port=server.rest_port, grpc_port=server.grpc_port) as c:
        (top,) = c.top_k("colours", [jpeg((240, 240, 240))], protocol="grpc", k=2)
        assert top[0][0] == "white" and len(top) == 2
        out = c.grpc_predict("colours", {"images": np.array([jpeg((5, 5, 5))], dtype=object)})
        assert out["probabilities"].argmax() == 4


def test_cli_predict(server: CorollaProcess, tmp_path: Path) -> None:
    import subprocess
    import sys

    image = tmp_path / "red.jpg"
    image.write_bytes(jpeg((230, 10, 10)))
    for protocol in ("grpc", "rest", "v2", "v2-grpc"):
        out = subprocess.run(
            [sys.executable, "-m", "corolla", "predict", "colours", str(image),
             f"--protocol={protocol}", f"--port={server.grpc_port}",
             f"--rest_api_port={server.rest_port}", "--host=127.0.0.1", "--top_k=3"],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        assert lines[0].endswith("red.jpg:") and "1. red" in lines[1] and len(lines) == 4
