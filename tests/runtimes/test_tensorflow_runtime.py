"""The TensorFlow SavedModel runtime, on SavedModels written as the TensorFlow tutorials do."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tf = pytest.importorskip("tensorflow")

import numpy as np  # noqa: E402
import tf_tutorial  # noqa: E402
from PIL import Image  # noqa: E402

from corolla.errors import CorollaError, FailedPrecondition, InvalidArgument  # noqa: E402
from corolla.model_dir import METADATA_FILE  # noqa: E402
from corolla.protocols import tf_inference  # noqa: E402
from corolla.runtimes.tensorflow import (  # noqa: E402
    TensorflowOptions,
    TensorflowRuntime,
    TensorflowServable,
)
from corolla.runtimes.tf_warmup import WARMUP_FILE, read_tfrecords, write_tfrecords  # noqa: E402

pytestmark = pytest.mark.tensorflow

SIZE = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Version directories: the tutorial CNN saved both ways, a JPEG model, an Example model."""
    root = tmp_path_factory.mktemp("savedmodels")
    cnn = tf_tutorial.tutorial_cnn(SIZE, SIZE)
    return {
        "saved_model": tf_tutorial.save_keras(cnn, root / "cnn" / "1", "saved_model"),
        "export": tf_tutorial.save_keras(cnn, root / "cnn_export" / "1", "export"),
        "jpeg": tf_tutorial.save_jpeg_model(cnn, root / "jpeg" / "1"),
        "examples": tf_tutorial.save_example_model(root / "examples" / "1"),
    }


@pytest.fixture(scope="module")
def runtime() -> TensorflowRuntime:
    return TensorflowRuntime()


def images(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(images(1, seed)[0].astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def strings(items: list[bytes]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def reference(path: Path, signature: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    """The SavedModel's own signature call, outside Corolla."""
    fn = tf.saved_model.load(str(path)).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def copy_version(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- import and detection -----------------------------------------------------------------------


def test_module_imports_without_tensorflow() -> None:
    code = ("import sys, corolla.runtimes.tensorflow, corolla.protocols.tf_inference, "
            "corolla.runtimes.tf_warmup, corolla.convert_cli; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_can_load_detects_savedmodels(models: dict[str, Path], runtime: TensorflowRuntime,
                                      tmp_path: Path) -> None:
    from corolla.demo_model import write_demo_version

    assert all(runtime.can_load(p) for p in models.values())
    assert not runtime.can_load(write_demo_version(tmp_path / "onnx", 1, 16))
    assert not runtime.can_load(tmp_path)
    pbtxt = tmp_path / "pbtxt"
    pbtxt.mkdir()
    (pbtxt / "saved_model.pbtxt").write_text("")
    assert runtime.can_load(pbtxt)
    assert runtime.platform == "tensorflow"


# ---- signatures ---------------------------------------------------------------------------------


def test_metadata_of_tf_saved_model_save(models: dict[str, Path], runtime: TensorflowRuntime
                                         ) -> None:
    md = runtime.load(models["saved_model"]).metadata
    assert md.platform == "tensorflow"
    assert list(md.signatures) == ["serving_default"]  # no __saved_model_init_op
    sig = md.signatures["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    (alias, spec), = sig.inputs.items()
    assert (alias, spec.name, spec.dtype, spec.shape) == (
        "inputs", "serving_default_inputs:0", "float32", (-1, SIZE, SIZE, 3))
    (alias, spec), = sig.outputs.items()
    assert (alias, spec.dtype, spec.shape) == ("output_0", "float32", (-1, 5))
    assert spec.name.endswith(":0")


def test_metadata_of_model_export(models: dict[str, Path], runtime: TensorflowRuntime) -> None:
    md = runtime.load(models["export"]).metadata
    assert sorted(md.signatures) == ["serve", "serving_default"]
    alias = tf_tutorial.input_alias(models["export"])
    assert alias.startswith("keras_tensor")
    assert md.signatures["serving_default"].inputs[alias].name == f"serving_default_{alias}:0"
    assert md.signatures["serve"].inputs[alias].name == f"serve_{alias}:0"


def test_metadata_of_example_signatures(models: dict[str, Path], runtime: TensorflowRuntime
                                        ) -> None:
    sigs = runtime.load(models["examples"]).metadata.signatures
    assert {k: s.method_name for k, s in sigs.items()} == {
        "serving_default": "tensorflow/serving/classify",
        "regress": "tensorflow/serving/regress",
        "predict": "tensorflow/serving/predict",
    }
    assert sigs["serving_default"].inputs["inputs"].dtype == "string"
    assert sigs["serving_default"].inputs["inputs"].name == "tf_example:0"
    assert sigs["serving_default"].outputs["classes"].dtype == "string"
    assert sigs["serving_default"].outputs["scores"].shape == (-1, 3)


# ---- predict ------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["saved_model", "export"])
def test_predict_equals_the_signature_call(models: dict[str, Path], runtime: TensorflowRuntime,
                                           which: str) -> None:
    alias = tf_tutorial.input_alias(models[which])
    x = images()
    out = runtime.load(models[which]).predict({alias: x})
    want = reference(models[which], "serving_default", **{alias: x})
    assert set(out) == {"output_0"}
    np.testing.assert_array_equal(out["output_0"], want["output_0"])


def test_predict_other_signature_and_output_filter(models: dict[str, Path],
                                                   runtime: TensorflowRuntime) -> None:
    servable = runtime.load(models["export"])
    alias = tf_tutorial.input_alias(models["export"])
    x = images(2, seed=1)
    a = servable.predict({alias: x}, signature="serve")
    b = servable.predict({alias: x}, output_filter=("output_0",))
    np.testing.assert_allclose(a["output_0"], b["output_0"], rtol=1e-6)


def test_predict_concurrently(models: dict[str, Path], runtime: TensorflowRuntime) -> None:
    from concurrent.futures import ThreadPoolExecutor

    servable = runtime.load(models["saved_model"])
    batches = [images(1 + i % 3, seed=i) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: servable.predict({"inputs": x})["output_0"], batches))
    for x, got in zip(batches, results, strict=True):
        np.testing.assert_allclose(got, servable.predict({"inputs": x})["output_0"], rtol=1e-5)


def test_jpeg_strings_in_bytes_out(models: dict[str, Path], runtime: TensorflowRuntime) -> None:
    servable = runtime.load(models["jpeg"])
    batch = strings([jpeg_bytes(1), jpeg_bytes(2)])
    out = servable.predict({"image_bytes": batch})
    want = reference(models["jpeg"], "serving_default", image_bytes=batch)
    np.testing.assert_array_equal(out["scores"], want["scores"])
    assert out["label"].dtype == object and list(out["label"]) == list(want["label"])
    assert out["label"][0].decode() in tf_tutorial.FLOWERS
    assert all(t.startswith(b"\x89PNG") for t in out["thumbnail_bytes"])


def test_corrupt_jpeg_is_invalid_argument(models: dict[str, Path], runtime: TensorflowRuntime
                                          ) -> None:
    servable = runtime.load(models["jpeg"])
    with pytest.raises(InvalidArgument):
        servable.predict({"image_bytes": strings([b"not a jpeg"])})


def test_wrong_shape_is_invalid_argument(models: dict[str, Path], runtime: TensorflowRuntime
                                         ) -> None:
    servable = runtime.load(models["saved_model"])
    with pytest.raises(InvalidArgument):
        servable.predict({"inputs": np.zeros((1, 8, 8, 3), np.float32)})


def test_classify_and_regress_signatures(models: dict[str, Path], runtime: TensorflowRuntime
                                         ) -> None:
    servable = runtime.load(models["examples"])
    xs = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]], np.float32)
    serialized = strings([tf_tutorial.float_example(x) for x in xs])
    want_scores, want_values = tf_tutorial.example_model_reference(xs)

    esig = tf_inference.example_signature(servable.metadata.signatures, "",
                                          tf_inference.CLASSIFY_METHOD)
    out = servable.predict({esig.input: serialized}, signature=esig.name,
                           output_filter=esig.outputs)
    rows = tf_inference.classifications(esig, out, len(xs))
    assert [[label for label, _ in row] for row in rows] == [["cat", "dog", "bird"]] * 3
    np.testing.assert_allclose([[s for _, s in row] for row in rows], want_scores, rtol=1e-5)

    rsig = tf_inference.example_signature(servable.metadata.signatures, "regress",
                                          tf_inference.REGRESS_METHOD)
    out = servable.predict({rsig.input: serialized}, signature="regress")
    np.testing.assert_allclose(tf_inference.regressions(rsig, out, len(xs)), want_values)

    with pytest.raises(InvalidArgument, match="Expected classification signature method_name"):
        tf_inference.example_signature(servable.metadata.signatures, "predict",
                                       tf_inference.CLASSIFY_METHOD)


# ---- options and metadata -----------------------------------------------------------------------


def test_saved_model_tags(models: dict[str, Path]) -> None:
    with pytest.raises(FailedPrecondition, match="could not be found"):
        TensorflowRuntime(TensorflowOptions(saved_model_tags=("serve", "gpu"))).load(
            models["saved_model"])


def test_thread_options_are_applied_once() -> None:
    # TensorFlow's runtime is already running in this process, so new values are reported and
    # ignored rather than failing the load.
    rt = TensorflowRuntime(TensorflowOptions(intra_op_parallelism=1, inter_op_parallelism=1))
    rt._configure()
    rt._configure()


def test_corolla_json_adds_labels_and_preprocessing(models: dict[str, Path], tmp_path: Path,
                                                    runtime: TensorflowRuntime) -> None:
    version = copy_version(models["saved_model"], tmp_path / "1")
    (version / METADATA_FILE).write_text(json.dumps({
        "format": "corolla.model/v1", "platform": "tensorflow",
        "signatures": {"serving_default": {
            "inputs": {"inputs": {"dtype": "float32", "shape": [-1, SIZE, SIZE, 3]}},
            "outputs": {"output_0": {"dtype": "float32", "shape": [-1, 5]}}}},
        "labels": list(tf_tutorial.FLOWERS), "scores_output": "output_0",
        "scores_are_probabilities": False,
        "preprocessing": {"input": "inputs", "height": SIZE, "width": SIZE},
    }))
    md = runtime.load(version).metadata
    assert md.labels == tf_tutorial.FLOWERS and md.scores_output == "output_0"
    assert md.preprocessing is not None and md.preprocessing.height == SIZE
    assert md.signatures["serving_default"].inputs["inputs"].name == "serving_default_inputs:0"

    (version / METADATA_FILE).write_text(json.dumps({
        "format": "corolla.model/v1", "platform": "tensorflow",
        "signatures": {"serving_default": {"inputs": {"x": {"dtype": "float32"}},
                                           "outputs": {"y": {"dtype": "float32"}}}},
        "labels": ["a"], "scores_output": "y"}))
    with pytest.raises(FailedPrecondition, match="does not fit the SavedModel"):
        runtime.load(version)


def test_close_releases_the_servable(models: dict[str, Path], runtime: TensorflowRuntime
                                     ) -> None:
    servable = runtime.load(models["saved_model"])
    assert isinstance(servable, TensorflowServable)
    servable.close()
    with pytest.raises(CorollaError):
        servable.predict({"inputs": images(1)})


# ---- warmup -------------------------------------------------------------------------------------


def add_warmup(version: Path, records: list[bytes], *, with_tensorflow: bool = True) -> None:
    path = version / WARMUP_FILE
    path.parent.mkdir(exist_ok=True)
    if with_tensorflow:  # the way TF Serving's documentation writes them
        with tf.io.TFRecordWriter(str(path)) as writer:
            for rec in records:
                writer.write(rec)
    else:
        write_tfrecords(path, records)


def test_tfrecord_reader_and_writer_match_tensorflow(tmp_path: Path) -> None:
    records = [b"", b"one", bytes(range(256)) * 40]
    write_tfrecords(tmp_path / "ours", records)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours"))] == records
    with tf.io.TFRecordWriter(str(tmp_path / "theirs")) as w:
        for rec in records:
            w.write(rec)
    assert list(read_tfrecords(tmp_path / "theirs")) == records


def test_warmup_records_run_before_load_returns(models: dict[str, Path], tmp_path: Path,
                                                runtime: TensorflowRuntime,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    version = copy_version(models["export"], tmp_path / "1")
    alias = tf_tutorial.input_alias(version)
    add_warmup(version, [
        tf_tutorial.warmup_record("predict", inputs={alias: images(2)}),
        tf_tutorial.warmup_record("predict", inputs={alias: images(1)}, signature_name="serve"),
    ])
    calls: list[str] = []
    original = TensorflowServable.predict

    def spy(self: TensorflowServable, inputs: dict[str, np.ndarray], **kw: object) -> object:
        calls.append(str(kw.get("signature")))
        return original(self, inputs, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(TensorflowServable, "predict", spy)
    runtime.load(version)
    assert calls == ["serving_default", "serve"]
    calls.clear()
    TensorflowRuntime(TensorflowOptions(warmup_iterations=3)).load(version)
    assert len(calls) == 6
    calls.clear()
    TensorflowRuntime(TensorflowOptions(enable_model_warmup=False)).load(version)
    assert calls == []


def test_warmup_classify_and_regress_records(models: dict[str, Path], tmp_path: Path,
                                             runtime: TensorflowRuntime) -> None:
    version = copy_version(models["examples"], tmp_path / "1")
    add_warmup(version, [
        tf_tutorial.warmup_record("classify", examples=[[1, 2], [3, 4]]),
        tf_tutorial.warmup_record("regress", signature_name="regress", examples=[[1, 2]]),
        tf_tutorial.warmup_record("predict", signature_name="predict",
                                  inputs={"x": np.ones((1, 2), np.float32)}),
    ], with_tensorflow=False)
    runtime.load(version)


@pytest.mark.parametrize(("records", "match"), [
    ([b"\x0a\x03bad"], "Failed to parse warmup record"),
    (["wrong_alias"], "do not match signature"),
    (["regress_on_classifier"], "Expected regression signature method_name"),
])
def test_failed_warmup_fails_the_load(models: dict[str, Path], tmp_path: Path,
                                      runtime: TensorflowRuntime, records: list[object],
                                      match: str) -> None:
    which = "examples" if records == ["regress_on_classifier"] else "export"
    version = copy_version(models[which], tmp_path / "1")
    raw = []
    for r in records:
        if r == "wrong_alias":
            raw.append(tf_tutorial.warmup_record("predict", inputs={"x": images(1)}))
        elif r == "regress_on_classifier":
            raw.append(tf_tutorial.warmup_record("regress", examples=[[1, 2]]))
        else:
            assert isinstance(r, bytes)
            raw.append(r)
    add_warmup(version, raw)
    with pytest.raises(FailedPrecondition, match=match):
        runtime.load(version)


def test_warmup_file_that_is_not_tfrecord_fails_the_load(models: dict[str, Path], tmp_path: Path,
                                                         runtime: TensorflowRuntime) -> None:
    version = copy_version(models["export"], tmp_path / "1")
    (version / "assets.extra").mkdir()
    (version / WARMUP_FILE).write_bytes(b"this is not a TFRecord file at all")
    with pytest.raises(FailedPrecondition, match="TFRecord format"):
        runtime.load(version)


def test_warmup_record_limit(models: dict[str, Path], tmp_path: Path,
                             runtime: TensorflowRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    from corolla.runtimes import tf_warmup

    monkeypatch.setattr(tf_warmup, "MAX_RECORDS", 2)
    version = copy_version(models["saved_model"], tmp_path / "1")
    add_warmup(version, [tf_tutorial.warmup_record("predict", inputs={"inputs": images(1)})] * 3)
    with pytest.raises(FailedPrecondition, match="exceeds the maximum"):
        runtime.load(version)
