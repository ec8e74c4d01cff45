"""TF Serving's gRPC PredictionService and ModelService, in process on port 0."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_helpers import Served, configs, jpeg, pixels

from corolla.protocols import tensor_proto
from corolla.protos.gen.tensorflow.core.example import example_pb2
from corolla.protos.gen.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from corolla.protos.gen.tensorflow_serving.config import model_server_config_pb2


def _stub(served: Served) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(served.channel)


def _predict_request(name: str, **inputs: np.ndarray) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    for alias, arr in inputs.items():
        tensor_proto.from_numpy(arr, content=True, out=req.inputs[alias])
    return req


async def test_predict_float_tensor(served: Served) -> None:
    req = _predict_request("colours", images=pixels((250, 10, 10)))
    resp = await _stub(served).Predict(req)
    assert resp.model_spec.name == "colours" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    probs = resp.outputs["probabilities"]
    assert len(probs.float_val) == 5 and not probs.tensor_content  # typed, as TF Serving
    scores = tensor_proto.to_numpy(probs)
    assert scores.shape == (1, 5) and int(scores.argmax()) == 0  # red


@pytest.mark.parametrize("version", [-1, 0, 2**63 - 1])
async def test_a_version_that_no_model_has_is_not_found(served: Served, version: int) -> None:
    """TF Serving's model_spec carries an int64: any value is well formed, and one that no
    version has is NOT_FOUND on every call that takes a model_spec (as TF Serving answers)."""
    predict = _predict_request("fake", x=np.ones((1, 4), np.float32))
    predict.model_spec.version.value = version
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "fake"
    metadata.model_spec.version.value = version
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "fake"
    status.model_spec.version.value = version
    models = model_service_pb2_grpc.ModelServiceStub(served.channel)
    for call in (_stub(served).Predict(predict), _stub(served).GetModelMetadata(metadata),
                 models.GetModelStatus(status)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()


@pytest.mark.parametrize("shape", [(2,), (2, 1)])
async def test_predict_encoded_images(served: Served, shape: tuple[int, ...]) -> None:
    images = np.array([jpeg((10, 240, 10)), jpeg((10, 10, 240))], dtype=object).reshape(shape)
    resp = await _stub(served).Predict(_predict_request("colours", images=images))
    scores = tensor_proto.to_numpy(resp.outputs["probabilities"])
    assert scores.shape == (2, 5) and scores.argmax(axis=1).tolist() == [1, 2]


async def test_predict_version_label_and_filter(served: Served) -> None:
    req = _predict_request("fake", x=np.ones((1, 4), np.float32))
    req.model_spec.version.value = 2
    req.output_filter.append("outputs")
    resp = await _stub(served).Predict(req)
    assert list(resp.outputs) == ["outputs"]
    assert tensor_proto.to_numpy(resp.outputs["outputs"]).tolist() == [[102.0] * 4]


@pytest.mark.parametrize(("mutate", "code", "message"), [
    (lambda r: r.model_spec.__setattr__("name", "nope"), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    (lambda r: r.model_spec.version.__setattr__("value", 9), grpc.StatusCode.NOT_FOUND,
     "Specific(colours, 9)"),
    (lambda r: r.model_spec.__setattr__("version_label", "nolabel"),
     grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nolabel"),
    (lambda r: r.inputs["images"].tensor_shape.dim[1].__setattr__("size", 32),
     grpc.StatusCode.INVALID_ARGUMENT, "tensor_content has"),
    (lambda r: r.inputs["other"].CopyFrom(r.inputs["images"]), grpc.StatusCode.INVALID_ARGUMENT,
     "input tensor alias not found"),
    (lambda r: r.ClearField("model_spec"), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    (lambda r: r.model_spec.__setattr__("signature_name", "nosig"),
     grpc.StatusCode.INVALID_ARGUMENT, "nosig"),
])
async def test_predict_errors(served: Served, mutate: object, code: grpc.StatusCode,
                              message: str) -> None:
    req = _predict_request("colours", images=pixels((1, 2, 3)))
    mutate(req)  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(served).Predict(req)
    assert info.value.code() == code and message in (info.value.details() or "")


async def test_predict_bad_image_is_invalid_argument(served: Served) -> None:
    req = _predict_request("colours", images=np.array([b"not an image"], dtype=object))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(served).Predict(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _example_input(images: list[bytes]) -> object:
    from corolla.protos.gen.tensorflow_serving.apis import input_pb2

    inp = input_pb2.Input()
    for img in images:
        ex: example_pb2.Example = inp.example_list.examples.add()
        ex.features.feature["image"].bytes_list.value.append(img)
    return inp


async def test_classify(served: Served) -> None:
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "colours"
    req.input.CopyFrom(_example_input([jpeg((240, 240, 240)), jpeg((5, 5, 5))]))
    resp = await _stub(served).Classify(req)
    assert resp.model_spec.version.value == 1
    tops = [c.classes[0].label for c in resp.result.classifications]
    assert tops == ["white", "black"]
    assert len(resp.result.classifications[0].classes) == 5
    assert sum(c.score for c in resp.result.classifications[0].classes) == pytest.approx(1, 1e-4)


async def test_classify_float_features(served: Served) -> None:
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "fake"
    ex = req.input.example_list.examples.add()
    ex.features.feature["x"].float_list.value.extend([0.0, 5.0, 0.0, 0.0])
    resp = await _stub(served).Classify(req)
    assert resp.result.classifications[0].classes[0].label == "b"


async def test_multi_inference_and_regress(served: Served) -> None:
    req = inference_pb2.MultiInferenceRequest()
    task = req.tasks.add(method_name="tensorflow/serving/classify")
    task.model_spec.name = "colours"
    req.input.CopyFrom(_example_input([jpeg((240, 5, 5))]))
    resp = await _stub(served).MultiInference(req)
    assert resp.results[0].classification_result.classifications[0].classes[0].label == "red"
    req.tasks.add(method_name="tensorflow/serving/classify").model_spec.name = "fake"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(served).MultiInference(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reg = regression_pb2.RegressionRequest()
    reg.model_spec.name = "colours"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(served).Regress(reg)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # as TF Serving


async def test_get_model_metadata(served: Served) -> None:
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "colours"
    resp = await _stub(served).GetModelMetadata(req)
    assert resp.model_spec.version.value == 1
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sigs)
    sd = sigs.signature_def["serving_default"]
    assert [d.size for d in sd.inputs["images"].tensor_shape.dim] == [-1, 64, 64, 3]
    req.metadata_field[:] = ["nope"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(served).GetModelMetadata(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_model_status(served: Served) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(served.channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "fake"
    resp = await stub.GetModelStatus(req)
    assert [(s.version, s.state) for s in resp.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    assert resp.model_version_status[0].status.error_code == 0
    req.model_spec.name = "nope"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetModelStatus(req)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # An unknown label is INVALID_ARGUMENT in TF Serving (ServerCore::GetModelVersionForLabel).
    req.model_spec.name = "fake"
    req.model_spec.version_label = "nolabel"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetModelStatus(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: nolabel" in (info.value.details() or "")


def _reload_request(served: Served, *names: str) -> model_management_pb2.ReloadConfigRequest:
    req = model_management_pb2.ReloadConfigRequest()
    cfg: model_server_config_pb2.ModelServerConfig = req.config
    for c in configs(served.models_dir, *names):
        cfg.model_config_list.config.add(name=c.name, base_path=c.base_path)
    return req


async def test_reload_config_adds_and_removes(served: Served) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(served.channel)
    resp = await stub.HandleReloadConfigRequest(_reload_request(served, "fake"), timeout=30)
    assert resp.status.error_code == 0
    assert not served.service.manager.has_model("colours")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _stub(served).Predict(_predict_request("colours", images=pixels((1, 2, 3))))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.HandleReloadConfigRequest(_reload_request(served, "fake", "colours"), timeout=30)
    await _stub(served).Predict(_predict_request("colours", images=pixels((1, 2, 3))))


async def test_reload_config_failure(served: Served) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(served.channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.HandleReloadConfigRequest(_reload_request(served, "fake", "broken"),
                                             timeout=30)
    assert "this version cannot load" in (info.value.details() or "")
    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.model_config_list.config.add(name="x", base_path="")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.HandleReloadConfigRequest(bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
