"""End to end: SavedModels written as TensorFlow's tutorials write them, served by a real
``corolla serve`` process, over TF Serving's REST and gRPC APIs.

Models (one models.config, ``model_platform: "tensorflow"`` except ``swap``, which is detected):
``cnn`` (tutorial CNN, ``tf.saved_model.save``), ``cnn_export`` (``model.export``), ``jpeg``
(JPEG bytes in), ``examples`` (classify/regress signatures, with warmup records) and ``swap``
(a SavedModel that ``corolla convert`` turns into an ONNX version 2 while the server runs).
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

tf = pytest.importorskip("tensorflow")

import grpc  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import tf_tutorial  # noqa: E402
from corolla_harness import CorollaProcess, corolla_process  # noqa: E402
from PIL import Image  # noqa: E402

from corolla.protocols import tensor_proto  # noqa: E402
from corolla.protos.gen.tensorflow_serving.apis import (  # noqa: E402
    predict_pb2,
    prediction_service_pb2_grpc,
)
from corolla.runtimes.tf_warmup import WARMUP_FILE, write_tfrecords  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

SIZE = 32
MODELS_CONFIG = """
model_config_list {
  config { name: "cnn" base_path: "models/cnn" model_platform: "tensorflow" }
  config { name: "cnn_export" base_path: "models/cnn_export" model_platform: "tensorflow" }
  config { name: "jpeg" base_path: "models/jpeg" model_platform: "tensorflow" }
  config { name: "examples" base_path: "models/examples" model_platform: "tensorflow" }
  config { name: "swap" base_path: "models/swap" }
}
"""


# ---- models -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorollaProcess]:
    work = tmp_path_factory.mktemp("tf-e2e")
    models = work / "models"
    cnn = tf_tutorial.tutorial_cnn(SIZE, SIZE)
    tf_tutorial.save_keras(cnn, models / "cnn" / "1", "saved_model")
    tf_tutorial.save_keras(cnn, models / "cnn_export" / "1", "export")
    tf_tutorial.save_jpeg_model(cnn, models / "jpeg" / "1")
    examples = tf_tutorial.save_example_model(models / "examples" / "1")
    (examples / WARMUP_FILE).parent.mkdir()
    write_tfrecords(examples / WARMUP_FILE, [
        tf_tutorial.warmup_record("classify", examples=[[1, 2], [3, 4]]),
        tf_tutorial.warmup_record("regress", signature_name="regress", examples=[[1, 2]]),
    ])
    tf_tutorial.save_keras(tf_tutorial.tutorial_cnn(SIZE, SIZE, seed=7),
                           models / "swap" / "1", "saved_model")
    (work / "models.config").write_text(MODELS_CONFIG)
    with corolla_process(["--model_config_file=models.config",
                          "--file_system_poll_wait_seconds=0.5"], work, timeout=120.0) as s:
        yield s


@pytest.fixture(scope="module")
def client(served: CorollaProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def stub(served: CorollaProcess) -> Iterator[Any]:
    with grpc.insecure_channel(served.grpc_target) as ch:
        yield prediction_service_pb2_grpc.PredictionServiceStub(ch)


def reference(version_dir: Path, signature: str, **inputs: Any) -> dict[str, np.ndarray]:
    """The SavedModel's own signature call, in this process."""
    fn = tf.saved_model.load(str(version_dir)).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    return resp.json()


# ---- predict ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["cnn", "cnn_export"])
def test_rest_and_grpc_predictions_equal_the_signature_call(
        served: CorollaProcess, client: httpx.Client, stub: Any, model: str) -> None:
    alias = tf_tutorial.input_alias(served.workdir / "models" / model / "1")
    x = images(3, seed=1)
    want = reference(served.workdir / "models" / model / "1", "serving_default",
                     **{alias: x})["output_0"]

    rest = ok(client.post(f"/v1/models/{model}:predict", json={"instances": x.tolist()}))
    np.testing.assert_allclose(np.array(rest["predictions"]), want, rtol=1e-5, atol=1e-6)
    columnar = ok(client.post(f"/v1/models/{model}:predict", json={"inputs": {alias: x.tolist()}}))
    np.testing.assert_allclose(np.array(columnar["outputs"]), want, rtol=1e-5, atol=1e-6)

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    tensor_proto.from_numpy(x, out=req.inputs[alias], content=True)
    resp = stub.Predict(req, timeout=60)
    assert resp.model_spec.version.value == 1
    np.testing.assert_allclose(tensor_proto.to_numpy(resp.outputs["output_0"]), want,
                               rtol=1e-5, atol=1e-6)


def test_signature_name_selects_another_signature(served: CorollaProcess,
                                                  client: httpx.Client) -> None:
    x = images(2, seed=2)
    version = served.workdir / "models" / "cnn_export" / "1"
    want = reference(version, "serve", **{tf_tutorial.input_alias(version): x})
    got = ok(client.post("/v1/models/cnn_export:predict",
                         json={"signature_name": "serve", "instances": x.tolist()}))
    np.testing.assert_allclose(np.array(got["predictions"]), want["output_0"], rtol=1e-5,
                               atol=1e-6)
    bad = client.post("/v1/models/cnn_export:predict",
                      json={"signature_name": "nope", "instances": x.tolist()})
    assert bad.status_code == 400


def test_metadata_has_tf_servings_shape(client: httpx.Client) -> None:
    md = ok(client.get("/v1/models/cnn_export/metadata"))
    assert md["model_spec"] == {"name": "cnn_export", "signature_name": "", "version": "1"}
    sigs = md["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serve", "serving_default"}
    sd = sigs["serving_default"]
    assert sd["method_name"] == "tensorflow/serving/predict"
    (alias,) = sd["inputs"]
    assert alias.startswith("keras_tensor")
    assert sd["inputs"][alias] == {
        "dtype": "DT_FLOAT", "name": f"serving_default_{alias}:0",
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in (-1, SIZE, SIZE, 3)],
                         "unknown_rank": False}}
    assert sd["outputs"]["output_0"]["tensor_shape"]["dim"][0]["size"] == "-1"
    ex = ok(client.get("/v1/models/examples/metadata"))["metadata"]["signature_def"]
    methods = {k: v["method_name"] for k, v in ex["signature_def"].items()}
    assert methods == {"serving_default": "tensorflow/serving/classify",
                       "regress": "tensorflow/serving/regress",
                       "predict": "tensorflow/serving/predict"}
    assert ex["signature_def"]["serving_default"]["inputs"]["inputs"]["dtype"] == "DT_STRING"


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(images(1, seed)[0].astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_jpeg_strings_as_b64_and_bytes_outputs(served: CorollaProcess,
                                               client: httpx.Client) -> None:
    shots = [jpeg(3), jpeg(4)]
    arr = np.empty(2, dtype=object)
    arr[:] = shots
    want = reference(served.workdir / "models" / "jpeg" / "1", "serving_default", image_bytes=arr)
    got = ok(client.post("/v1/models/jpeg:predict", json={
        "instances": [{"b64": base64.b64encode(b).decode()} for b in shots]}))
    preds = got["predictions"]
    assert [p["label"] for p in preds] == [s.decode() for s in want["label"]]
    np.testing.assert_allclose([p["scores"] for p in preds], want["scores"], rtol=1e-5, atol=1e-6)
    for p, thumb in zip(preds, want["thumbnail_bytes"], strict=True):
        assert base64.b64decode(p["thumbnail_bytes"]["b64"]) == thumb


# ---- classify / regress -------------------------------------------------------------------------


def test_classify_and_regress_over_rest(client: httpx.Client) -> None:
    xs = np.array([[1.0, 2.0], [3.0, -1.5]], np.float32)
    scores, values = tf_tutorial.example_model_reference(xs)
    body = {"examples": [{"x": row.tolist()} for row in xs]}
    got = ok(client.post("/v1/models/examples:classify", json=body))["result"]
    assert [[c[0] for c in row] for row in got] == [["cat", "dog", "bird"]] * 2
    np.testing.assert_allclose([[c[1] for c in row] for row in got], scores, rtol=1e-5)

    got = ok(client.post("/v1/models/examples:regress",
                         json={"signature_name": "regress", **body}))["result"]
    np.testing.assert_allclose(got, values, rtol=1e-6)

    wrong = client.post("/v1/models/examples:regress", json=body)
    assert wrong.status_code == 400
    assert "Expected regression signature method_name" in wrong.json()["error"]
    bad = client.post("/v1/models/examples:classify", json={"examples": [{"x": [1, 2.5]}]})
    assert bad.status_code == 400 and "expecting type: int64" in bad.json()["error"]


def test_warmup_records_ran_before_available(served: CorollaProcess, client: httpx.Client) -> None:
    status = ok(client.get("/v1/models/examples"))["model_version_status"]
    assert status[0]["state"] == "AVAILABLE"
    assert "warmup replayed 2 records" in served.log()


# ---- a version swap: SavedModel 1 -> ONNX 2 (corolla convert) ---------------------------------


def test_version_swap_from_savedmodel_to_onnx(served: CorollaProcess, client: httpx.Client) -> None:
    base = served.workdir / "models" / "swap"
    x = images(2, seed=5)
    before = ok(client.post("/v1/models/swap:predict", json={"instances": x.tolist()}))
    md = ok(client.get("/v1/models/swap/metadata"))
    assert md["metadata"]["corolla"]["platform"] == "tensorflow"

    done = subprocess.run(
        [sys.executable, "-m", "corolla", "convert", str(base / "1"), "--output", str(base)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (base / "2" / "model.onnx").is_file()
    assert "max |onnx - tensorflow|" in done.stdout

    # The server finds version 2 on its next file-system poll (every 0.5 s).
    md = served.wait_until(lambda: (m := client.get("/v1/models/swap/metadata").json()).get(
        "model_spec", {}).get("version") == "2" and m, "version 2 of swap", 60)
    assert md["metadata"]["corolla"]["platform"] == "onnx"
    assert set(md["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]) \
        == {"inputs"}
    after = ok(client.post("/v1/models/swap:predict", json={"instances": x.tolist()}))
    np.testing.assert_allclose(np.array(after["predictions"]), np.array(before["predictions"]),
                               rtol=1e-4, atol=1e-5)
