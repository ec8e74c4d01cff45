"""End to end over KServe V2 (tritonclient, HTTP and gRPC) against a real ``corolla serve``,
and the same image through all four APIs giving the same scores.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
import warnings
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from corolla_harness import CorollaProcess, corolla_process
from PIL import Image

from corolla.demo_model import write_demo_version
from corolla.protocols import tensor_proto
from corolla.protos.gen.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow


def photo(seed: int = 0) -> bytes:
    """A noisy, mostly green JPEG: exercises decode and resize, not just flat colour."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 90, (150, 200, 3), dtype=np.uint8)
    arr[..., 1] += 140
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorollaProcess]:
    work = tmp_path_factory.mktemp("v2-e2e")
    write_demo_version(work / "colours", 1, size=64)
    write_demo_version(work / "colours", 2, size=64)
    with corolla_process(["--model_name=colours", f"--model_base_path={work / 'colours'}"],
                       work) as s:
        yield s


@pytest.fixture(scope="module")
def http(server: CorollaProcess) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.rest_port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server: CorollaProcess) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


@pytest.mark.parametrize("which", ["http", "grpc"])
def test_health_and_metadata(which: str, http: triton_http.InferenceServerClient,
                             grpc_client: triton_grpc.InferenceServerClient) -> None:
    client = http if which == "http" else grpc_client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("colours") and client.is_model_ready("colours", "2")
    assert not client.is_model_ready("colours", "1")  # on disk, not served (latest 1)
    assert not client.is_model_ready("nope")
    md = client.get_model_metadata("colours")
    if which == "grpc":
        md = {"versions": list(md.versions), "inputs": [{"shape": list(md.inputs[0].shape)}]}
    assert md["versions"] == ["2"]  # latest 1 by default
    assert md["inputs"][0]["shape"] == [-1, 64, 64, 3]
    server_md = client.get_server_metadata()
    name = server_md["name"] if which == "http" else server_md.name
    assert name == "corolla"


@pytest.mark.parametrize("which", ["http", "grpc"])
def test_model_config_as_tritons_image_client_uses_it(
        which: str, http: triton_http.InferenceServerClient,
        grpc_client: triton_grpc.InferenceServerClient) -> None:
    """Triton's model configuration extension, read through Triton's own model_config.proto (the
    gRPC answer parses into tritonclient's classes), then used as Triton's image_client example
    uses it: the batch dimension from max_batch_size, the layout from the input's format, the
    pixels prepared client-side, and the label from the classification extension."""
    mod = triton_http if which == "http" else triton_grpc
    client = http if which == "http" else grpc_client
    md = client.get_model_metadata("colours")
    if which == "grpc":
        from tritonclient.grpc import model_config_pb2 as mc

        config = client.get_model_config("colours").config
        assert config.input[0].format == mc.ModelInput.FORMAT_NHWC
        assert config.input[0].data_type == mc.TYPE_FP32
        assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
        max_batch, in_name, dims = config.max_batch_size, config.input[0].name, config.input[0].dims
        out_name, out_dims = config.output[0].name, list(config.output[0].dims)
        shape = list(md.inputs[0].shape)
    else:
        config = client.get_model_config("colours")
        assert config["input"][0]["format"] == "FORMAT_NHWC"
        assert config["input"][0]["data_type"] == "TYPE_FP32"
        max_batch, in_name, dims = (config["max_batch_size"], config["input"][0]["name"],
                                    config["input"][0]["dims"])
        out_name, out_dims = config["output"][0]["name"], config["output"][0]["dims"]
        shape = md["inputs"][0]["shape"]
        assert client.get_model_config("colours", "2")["name"] == "colours"
    assert max_batch > 0 and list(dims) == [64, 64, 3] == shape[1:] and out_dims == [5]
    assert in_name == "images" and out_name == "probabilities"
    pixels = np.asarray(Image.open(io.BytesIO(photo())).convert("RGB").resize((64, 64)),
                        np.float32) / 255.0
    inp = mod.InferInput(in_name, [1, *dims], "FP32")
    inp.set_data_from_numpy(pixels[None])
    result = client.infer("colours", [inp],
                          outputs=[mod.InferRequestedOutput(out_name, class_count=1)])
    (top,) = result.as_numpy(out_name)[0]
    assert top.decode().endswith(":1:green")
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("nope")
    assert "nope" in info.value.message()


@pytest.mark.parametrize("binary", [True, False])
def test_http_infer_fp32(http: triton_http.InferenceServerClient, binary: bool) -> None:
    x = np.zeros((2, 64, 64, 3), np.float32)
    x[0, ..., 0] = 0.9
    x[1] = 0.02
    inp = triton_http.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = triton_http.InferRequestedOutput("probabilities", binary_data=binary)
    result = http.infer("colours", [inp], outputs=[out], request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == "2"
    assert result.as_numpy("probabilities").argmax(axis=1).tolist() == [0, 4]


def test_grpc_infer_images_and_classification(grpc_client: triton_grpc.InferenceServerClient
                                              ) -> None:
    inp = triton_grpc.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([photo()], dtype=object))
    result = grpc_client.infer("colours", [inp], model_version="2", outputs=[
        triton_grpc.InferRequestedOutput("probabilities", class_count=3)])
    top = [x.decode() for x in result.as_numpy("probabilities")[0]]
    assert len(top) == 3 and top[0].endswith(":1:green")
    assert result.get_response().model_version == "2"


@pytest.mark.parametrize("which", ["http", "grpc"])
def test_errors(which: str, http: triton_http.InferenceServerClient,
                grpc_client: triton_grpc.InferenceServerClient) -> None:
    mod = triton_http if which == "http" else triton_grpc
    client = http if which == "http" else grpc_client
    bad_shape = mod.InferInput("images", [1, 8, 8, 3], "FP32")
    bad_shape.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("colours", [bad_shape])
    assert "shape" in info.value.message()
    good = mod.InferInput("images", [1, 64, 64, 3], "FP32")
    good.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [good])
    assert "nope" in info.value.message()
    if which == "grpc":
        assert info.value.status() == "StatusCode.NOT_FOUND"
    else:
        assert info.value.status() == "404"
    junk = mod.InferInput("images", [1], "BYTES")
    junk.set_data_from_numpy(np.array([b"\x89PNG\r\n\x1a\n broken"], dtype=object))
    with pytest.raises(InferenceServerException) as info:
        client.infer("colours", [junk])
    assert "image 0" in info.value.message()


def test_same_scores_on_every_api(server: CorollaProcess, http: triton_http.InferenceServerClient,
                                  grpc_client: triton_grpc.InferenceServerClient) -> None:
    images = [photo(1), photo(2)]
    # TF Serving REST: {"b64": ...} instances.
    body = json.dumps({"instances": [{"b64": base64.b64encode(i).decode()} for i in images]})
    req = urllib.request.Request(f"{server.url}/v1/models/colours:predict",
                                 data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        rest_v1 = np.array(json.loads(resp.read())["predictions"], np.float32)
    # TF Serving gRPC: a DT_STRING tensor.
    preq = predict_pb2.PredictRequest()
    preq.model_spec.name = "colours"
    tensor_proto.from_numpy(np.array(images, dtype=object), out=preq.inputs["images"])
    with grpc.insecure_channel(server.grpc_target) as channel:
        presp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(preq,
                                                                                    timeout=30)
    grpc_tf = tensor_proto.to_numpy(presp.outputs["probabilities"])
    # KServe V2 REST (binary) and gRPC: BYTES tensors.
    v2 = {}
    for name, mod, client in (("http", triton_http, http), ("grpc", triton_grpc, grpc_client)):
        inp = mod.InferInput("images", [2], "BYTES")
        inp.set_data_from_numpy(np.array(images, dtype=object))
        v2[name] = client.infer("colours", [inp]).as_numpy("probabilities")
    assert rest_v1.shape == grpc_tf.shape == v2["http"].shape == v2["grpc"].shape == (2, 5)
    for other in (grpc_tf, v2["http"], v2["grpc"]):
        np.testing.assert_allclose(other, rest_v1, rtol=1e-6, atol=1e-7)
    assert rest_v1.argmax(axis=1).tolist() == [1, 1]
