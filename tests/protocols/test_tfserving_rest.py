"""TF Serving REST JSON codec (corolla.protocols.tfserving_rest): pure functions, tables."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from corolla.errors import Code, FailedPrecondition, InvalidArgument
from corolla.model_dir import ImagePreprocessing, ModelMetadata, Signature, TensorSpec
from corolla.protocols import tfserving_rest as codec
from corolla.repository.manager import VersionStatus
from corolla.repository.policy import State

ONE = Signature(
    inputs={"images": TensorSpec(name="images", dtype="float32", shape=(-1, 2))},
    outputs={"scores": TensorSpec(name="scores", dtype="float32", shape=(-1, 3))},
)
TWO = Signature(
    inputs={
        "a": TensorSpec(name="a", dtype="float32", shape=(-1, 2)),
        "b": TensorSpec(name="b", dtype="string", shape=(-1,)),
    },
    outputs={"y": TensorSpec(name="y", dtype="float32", shape=(-1,))},
)


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


# ---- loads ----------------------------------------------------------------------------------


def test_loads() -> None:
    assert codec.loads(b'{"instances": [1]}') == {"instances": [1]}
    # TF Serving takes NaN and Infinity literals; so does Corolla.
    doc = codec.loads(b'{"instances": [NaN, Infinity, -Infinity]}')
    values = doc["instances"]
    assert np.isnan(values[0]) and values[1] == float("inf") and values[2] == float("-inf")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "The document is empty"),
        (b"{", "JSON Parse error"),
        (b'{"instances": [1,]}', "JSON Parse error"),
        (b"\xff\xfe\x00", "JSON Parse error"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"[" * 100_000, "JSON Parse error"),  # deeper than any parser's recursion
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "JSON Parse error"),
    ],
    ids=[
        "empty",
        "open",
        "trailing-comma",
        "not-utf8",
        "list",
        "string",
        "null",
        "deep-list",
        "deep-object",
    ],
)
def test_loads_rejects(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        codec.loads(body)


# ---- parse_predict --------------------------------------------------------------------------


def test_row_format_single_input() -> None:
    inputs, row = codec.parse_predict({"instances": [[1, 2], [3, 4]]}, ONE)
    assert row is True
    assert list(inputs) == ["images"]
    assert inputs["images"].tolist() == [[1, 2], [3, 4]]


def test_row_format_named_inputs() -> None:
    doc = {"instances": [{"a": [1.5, 2], "b": "x"}, {"a": [3, 4], "b": b64(b"\x00\xff")}]}
    inputs, row = codec.parse_predict(doc, TWO)
    assert row is True
    assert inputs["a"].dtype == np.float64 and inputs["a"].tolist() == [[1.5, 2], [3, 4]]
    assert inputs["b"].dtype == object and inputs["b"].tolist() == [b"x", b"\x00\xff"]


def test_columnar_format() -> None:
    inputs, row = codec.parse_predict({"inputs": {"a": [[1, 2]], "b": ["s"]}}, TWO)
    assert row is False
    assert inputs["a"].shape == (1, 2) and inputs["b"].tolist() == [b"s"]
    inputs, row = codec.parse_predict({"inputs": [[1, 2]]}, ONE)  # single-input shorthand
    assert row is False and inputs["images"].shape == (1, 2)


def test_b64_values() -> None:
    jpeg = b"\xff\xd8\xff\xe0fake"
    inputs, _ = codec.parse_predict({"instances": [b64(jpeg), b64(b"2")]}, ONE)
    assert inputs["images"].dtype == object and inputs["images"].tolist() == [jpeg, b"2"]
    inputs, _ = codec.parse_predict({"instances": [{"images": b64(jpeg)}]}, ONE)
    assert inputs["images"].tolist() == [jpeg]
    inputs, _ = codec.parse_predict({"inputs": {"images": [b64(jpeg)]}}, ONE)
    assert inputs["images"].tolist() == [jpeg]
    inputs, _ = codec.parse_predict({"inputs": [[b64(b"a"), b64(b"b")]]}, ONE)
    assert inputs["images"].shape == (1, 2)


def test_types_are_kept() -> None:
    inputs, _ = codec.parse_predict({"instances": [[1, 2]]}, ONE)
    assert inputs["images"].dtype.kind == "i"
    inputs, _ = codec.parse_predict({"instances": [[True, False]]}, ONE)
    assert inputs["images"].dtype == np.bool_
    inputs, _ = codec.parse_predict({"instances": [[1, 2.5]]}, ONE)
    assert inputs["images"].dtype == np.float64


@pytest.mark.parametrize(
    ("doc", "sig", "message"),
    [
        ({}, ONE, "Missing 'inputs' or 'instances' key"),
        ({"signature_name": "x"}, ONE, "Missing 'inputs' or 'instances' key"),
        ({"instances": [[1, 2]], "inputs": [[1, 2]]}, ONE, "Not both 'inputs' and 'instances'"),
        ({"instances": []}, ONE, "'instances' is empty"),
        ({"instances": {"images": [1]}}, ONE, "'instances' must be a list"),
        ({"instances": [[1, 2], [3]]}, ONE, "ragged"),
        ({"instances": [[[1, 2]], [[3, 4], [5, 6]]]}, ONE, "ragged"),
        ({"inputs": {"images": [[1, 2], [3]]}}, ONE, "ragged"),
        ({"instances": [["a", "b"], ["c"]]}, ONE, "ragged"),
        ({"instances": [[1, "a"]]}, ONE, "same type"),
        ({"instances": [[1, None]]}, ONE, "same type"),
        ({"instances": [[1, {"x": 1}]]}, ONE, "same type|object"),
        ({"instances": [{"b64": 5}]}, ONE, "must be a string"),
        ({"instances": [{"b64": "!!!not base64!!!"}]}, ONE, "Unable to base64 decode"),
        ({"instances": [{"b64": "abcde"}]}, ONE, "Unable to base64 decode"),  # no length fits
        ({"instances": [{"a": [1, 2]}, {"b": "x"}]}, TWO, "every instance must name the same"),
        ({"instances": [{"a": [1, 2]}, [1, 2]]}, TWO, "mix named objects and bare values"),
        ({"instances": [[1, 2]]}, TWO, "must be objects naming each input"),
        ({"inputs": [[1, 2]]}, TWO, "must be an object naming each input"),
        ({"instances": [{"pixels": [1, 2]}]}, ONE, "alias not found in signature: pixels"),
        ({"inputs": {"images": {"x": 1}}}, ONE, "got an object"),
    ],
)
def test_parse_predict_rejects(doc: dict[str, Any], sig: Signature, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        codec.parse_predict(doc, sig)


# ---- responses ------------------------------------------------------------------------------


def test_row_response_single_output() -> None:
    out = codec.predict_response({"scores": np.array([[0.5, 0.5], [1, 0]], np.float32)}, True)
    assert out == {"predictions": [[0.5, 0.5], [1.0, 0.0]]}


def test_row_response_several_outputs() -> None:
    outputs = {"y": np.array([1.0, 2.0], np.float32), "k": np.array([[1, 2], [3, 4]])}
    assert codec.predict_response(outputs, True) == {
        "predictions": [{"y": 1.0, "k": [1, 2]}, {"y": 2.0, "k": [3, 4]}]}  # fmt: skip


def test_row_response_needs_a_common_batch_size() -> None:
    outputs = {"y": np.array([1.0, 2.0]), "k": np.array([1.0, 2.0, 3.0])}
    with pytest.raises(InvalidArgument, match="use the columnar 'inputs' format"):
        codec.predict_response(outputs, True)


def test_columnar_response() -> None:
    assert codec.predict_response({"y": np.array([1, 2])}, False) == {"outputs": [1, 2]}
    outputs = {"y": np.array([1, 2]), "k": np.array([[1.5]])}
    assert codec.predict_response(outputs, False) == {"outputs": {"y": [1, 2], "k": [[1.5]]}}


def test_bytes_outputs() -> None:
    arr = np.empty(3, dtype=object)
    arr[:] = [b"text", b"\xff\x00", "str"]
    doc = codec.predict_response({"label": arr}, True)
    assert doc["predictions"] == ["text", {"b64": base64.b64encode(b"\xff\x00").decode()}, "str"]
    # An alias ending in _bytes is always base64, as in TF Serving.
    arr2 = np.empty(1, dtype=object)
    arr2[:] = [b"text"]
    doc = codec.predict_response({"image_bytes": arr2}, True)
    assert doc["predictions"] == [{"b64": base64.b64encode(b"text").decode()}]


def test_non_finite_outputs() -> None:
    doc = codec.predict_response({"y": np.array([1.0, np.nan, np.inf, -np.inf])}, False)
    assert doc == {"outputs": [1.0, "NaN", "Infinity", "-Infinity"]}
    json.loads(codec.dumps(doc))  # still valid JSON


def test_dumps_numpy() -> None:
    assert json.loads(codec.dumps({"a": np.float32(0.5), "b": np.arange(2)})) == {
        "a": 0.5, "b": [0, 1]}  # fmt: skip


def test_status_response() -> None:
    statuses = [
        VersionStatus(version=3, state=State.END, error=FailedPrecondition("bad graph")),
        VersionStatus(version=2, state=State.AVAILABLE, error=None),
    ]
    assert codec.status_response(statuses) == {"model_version_status": [
        {"version": "3", "state": "END",
         "status": {"error_code": "FAILED_PRECONDITION", "error_message": "bad graph"}},
        {"version": "2", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}},
    ]}  # fmt: skip
    assert statuses[0].error is not None and statuses[0].error.code is Code.FAILED_PRECONDITION


def test_status_of_a_version_serving_while_its_source_fails_keeps_code_ok() -> None:
    note = "source: Could not list base path s3://b/m (retrying; loaded versions keep serving)"
    statuses = [VersionStatus(version=2, state=State.AVAILABLE, error=None, note=note)]
    assert codec.status_response(statuses) == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": note}},
    ]}  # fmt: skip


def test_metadata_response_has_tf_servings_shape() -> None:
    md = ModelMetadata(
        signatures={"serving_default": ONE, "raw": TWO},
        labels=("a", "b", "c"),
        scores_output="scores",
        preprocessing=ImagePreprocessing(
            input="images", height=2, width=1, channels=1, mean=(0.0,), std=(1.0,)
        ),
    )
    doc = codec.metadata_response("m", 7, md)
    assert doc["model_spec"] == {"name": "m", "signature_name": "", "version": "7"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "raw"}
    images = sigs["serving_default"]["inputs"]["images"]
    assert images == {
        "dtype": "DT_FLOAT", "name": "images",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}],
                         "unknown_rank": False},
    }  # fmt: skip
    assert sigs["raw"]["inputs"]["b"]["dtype"] == "DT_STRING"
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert doc["metadata"]["corolla"]["labels"] == ["a", "b", "c"]
    assert doc["metadata"]["corolla"]["preprocessing"]["height"] == 2
    unknown = ModelMetadata(
        signatures={
            "serving_default": Signature(
                inputs={"x": TensorSpec(name="x", dtype="int64", shape=None)}, outputs={}
            )
        }
    )
    x = codec.metadata_response("u", 1, unknown)["metadata"]["signature_def"]["signature_def"]
    assert x["serving_default"]["inputs"]["x"]["tensor_shape"] == {"dim": [], "unknown_rank": True}


def test_labelled_predictions() -> None:
    classes = [[("red", 0.75), ("blue", 0.25)]]
    scores = {"p": np.array([[0.75, 0.25]])}
    assert codec.labelled_predictions(classes, scores, "p") == [{
        "label": "red", "score": 0.75,
        "top_k": [{"label": "red", "score": 0.75}, {"label": "blue", "score": 0.25}],
        "p": [0.75, 0.25],
    }]  # fmt: skip
