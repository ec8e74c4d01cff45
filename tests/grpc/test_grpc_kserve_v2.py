"""KServe V2 gRPC (with tritonclient's own stubs), health and reflection, in process."""

from __future__ import annotations

import asyncio
import warnings

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_helpers import Served, jpeg, pixels
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from corolla.protocols import kserve_v2_grpc
from corolla.protos.gen import grpc_predict_v2_pb2 as pb
from corolla.protos.gen import grpc_predict_v2_pb2_grpc as pb_grpc

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import tritonclient.grpc.aio as triton


async def test_infer_with_tritonclient(served: Served) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{served.port}")
    try:
        assert await client.is_server_live() and await client.is_server_ready()
        assert await client.is_model_ready("colours")
        assert not await client.is_model_ready("colours", "7")
        md = await client.get_model_metadata("colours")
        assert md.platform == "onnxruntime_onnx" and md.versions == ["1"]
        assert list(md.inputs[0].shape) == [-1, 64, 64, 3]

        x = triton.InferInput("images", [1, 64, 64, 3], "FP32")
        x.set_data_from_numpy(pixels((240, 10, 10)))
        result = await client.infer("colours", [x], request_id="abc")
        assert result.get_response().id == "abc"
        assert result.as_numpy("probabilities").argmax() == 0

        img = triton.InferInput("images", [2, 1], "BYTES")
        img.set_data_from_numpy(np.array([[jpeg((5, 5, 240))], [jpeg((250, 250, 250))]],
                                         dtype=object))
        result = await client.infer("colours", [img], model_version="1", outputs=[
            triton.InferRequestedOutput("probabilities")])
        assert result.as_numpy("probabilities").argmax(axis=1).tolist() == [2, 3]
    finally:
        await client.close()


async def test_infer_typed_contents_and_errors(served: Served) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(served.channel)
    req = pb.ModelInferRequest(model_name="fake", id="1")
    t = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    t.contents.fp32_contents.extend([1, 2, 3, 4])
    resp = await stub.ModelInfer(req)
    out = kserve_v2_grpc.decode_response(resp)
    assert out["outputs"].tolist() == [[102, 104, 106, 108]]  # latest version adds 100
    assert [o.name for o in resp.outputs] == ["outputs", "scores"]
    assert resp.model_version == "2" and resp.id == "1"

    for mutate, code in [
        (lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND),
        (lambda r: setattr(r, "model_version", "x"), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda r: r.inputs[0].shape.__setitem__(1, 5), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda r: r.outputs.add(name="nope"), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        bad = pb.ModelInferRequest()
        bad.CopyFrom(req)
        mutate(bad)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(bad)
        assert info.value.code() == code, info.value.details()


@pytest.mark.parametrize("version", ["²", "¹", "١", "1²", "-1", "9" * 30])
async def test_a_version_that_is_no_number_is_invalid_argument(served: Served,
                                                               version: str) -> None:
    """Issue 22: '²' passed str.isdigit() and failed int(): INTERNAL on every V2 call."""
    stub = pb_grpc.GRPCInferenceServiceStub(served.channel)
    ready = await stub.ModelReady(pb.ModelReadyRequest(name="fake", version=version))
    assert ready.ready is False
    infer = pb.ModelInferRequest(model_name="fake", model_version=version)
    infer.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(
        [1, 2, 3, 4])
    calls = [
        stub.ModelMetadata(pb.ModelMetadataRequest(name="fake", version=version)),
        stub.ModelConfig(pb.ModelConfigRequest(name="fake", version=version)),
        stub.ModelInfer(infer),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert "model version must be a positive integer" in (info.value.details() or "")


async def test_model_metadata_not_found(served: Served) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(served.channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    meta = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "corolla"


async def test_health(served: Served) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", "tensorflow.serving.PredictionService", "colours"):
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == serving
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await call.read()
    assert first.status == serving
    served.service.draining = True
    second = await asyncio.wait_for(call.read(), 5)
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    call.cancel()


async def test_reflection(served: Served) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)

    async def ask(**kw: object) -> reflection_pb2.ServerReflectionResponse:
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(**kw))
        await call.done_writing()
        return await call.read()

    services = {s.name for s in (await ask(list_services="")).list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
    files = await ask(file_containing_symbol="tensorflow.serving.PredictionService")
    assert files.file_descriptor_response.file_descriptor_proto


async def test_classification_extension_with_tritonclient(served: Served) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{served.port}")
    try:
        img = triton.InferInput("images", [1], "BYTES")
        img.set_data_from_numpy(np.array([jpeg((240, 240, 240))], dtype=object))
        result = await client.infer("colours", [img], outputs=[
            triton.InferRequestedOutput("probabilities", class_count=2)])
        top = result.as_numpy("probabilities")
        assert top.shape == (1, 2) and top[0, 0].decode().endswith(":3:white")
    finally:
        await client.close()
