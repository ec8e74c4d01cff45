"""Serialized-Example Classify/Regress (corolla.protocols.tf_inference): pure, no TensorFlow."""

from __future__ import annotations

import base64
import re
from typing import Any

import numpy as np
import pytest

from corolla.errors import FailedPrecondition, InvalidArgument
from corolla.model_dir import ModelMetadata, Signature, TensorSpec
from corolla.protocols import tf_inference as ti
from corolla.protos.gen.tensorflow.core.example import example_pb2
from corolla.protos.gen.tensorflow_serving.apis import classification_pb2, input_pb2
from corolla.runtimes.tf_warmup import crc32c, read_tfrecords, write_tfrecords


def parse(serialized: bytes) -> dict[str, tuple[str, list[Any]]]:
    ex = example_pb2.Example.FromString(serialized)
    out = {}
    for name, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        out[name] = (kind, list(getattr(f, kind).value) if kind else [])
    return out


def spec(dtype: str, shape: tuple[int, ...] | None = (-1,)) -> TensorSpec:
    return TensorSpec(name="t:0", dtype=dtype, shape=shape)


CLASSIFY = Signature(method_name=ti.CLASSIFY_METHOD, inputs={"inputs": spec("string")},
                     outputs={"classes": spec("string", (-1, 2)),
                              "scores": spec("float32", (-1, 2))})
REGRESS = Signature(method_name=ti.REGRESS_METHOD, inputs={"inputs": spec("string")},
                    outputs={"outputs": spec("float32")})
PREDICT = Signature(inputs={"x": spec("float32", (-1, 2))}, outputs={"y": spec("float32")})
SIGS = {"serving_default": CLASSIFY, "regress": REGRESS, "predict": PREDICT}


@pytest.mark.parametrize(("value", "want"), [
    ("a", ("bytes_list", [b"a"])),
    (["a", "é"], ("bytes_list", [b"a", "é".encode()])),
    ({"b64": base64.b64encode(b"\xff\x00").decode()}, ("bytes_list", [b"\xff\x00"])),
    (3, ("int64_list", [3])),
    ([True, False, 7], ("int64_list", [1, 0, 7])),
    (1.5, ("float_list", [1.5])),
    ([1.0, 2e3], ("float_list", [1.0, 2000.0])),
    ([], (None, [])),
])
def test_json_feature_typing_follows_tf_serving(value: Any, want: tuple[str, list[Any]]) -> None:
    kind, values = parse(ti.example_from_json({"f": value}))["f"]
    assert kind == want[0]
    assert values == pytest.approx(want[1])


@pytest.mark.parametrize(("value", "match"), [
    ([1, 2.5], "expecting type: int64"),
    (["a", 1], "expecting type: bytes"),
    (None, "unexpected JSON type: null"),
    ([[1]], "unexpected JSON type: array"),
    ({"x": 1}, "unexpected JSON type: object"),
    (1 << 64, "uint64"),
    ({"b64": "***"}, "base64"),
])
def test_json_feature_errors(value: Any, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        ti.example_from_json({"f": value})


def test_json_request_with_context_lets_examples_override() -> None:
    arr = ti.serialize_json_request({
        "context": {"lang": "en", "bias": 1.0},
        "examples": [{"x": [1.0, 2.0]}, {"x": [3.0, 4.0], "lang": "fr"}]})
    assert arr.dtype == object and arr.shape == (2,)
    first, second = parse(arr[0]), parse(arr[1])
    assert first["lang"] == ("bytes_list", [b"en"]) and first["bias"][1] == [1.0]
    assert second["lang"] == ("bytes_list", [b"fr"])  # the example wins, as in TF Serving


@pytest.mark.parametrize(("doc", "match"), [
    ({}, "'examples' key is expected"),
    ({"examples": {}}, "list/array"),
    ({"examples": []}, "empty array"),
    ({"examples": [1]}, "must be JSON object"),
])
def test_json_request_errors(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        ti.serialize_json_request(doc)


def test_input_proto_serialization_matches_json() -> None:
    msg = input_pb2.Input()
    lst = msg.example_list_with_context
    lst.context.features.feature["lang"].bytes_list.value.append(b"en")
    ex = lst.examples.add()
    ex.features.feature["x"].float_list.value.extend([1.0, 2.0])
    arr = ti.serialize_input(msg)
    assert parse(arr[0]) == parse(ti.serialize_json_request(
        {"context": {"lang": "en"}, "examples": [{"x": [1.0, 2.0]}]})[0])
    with pytest.raises(InvalidArgument, match="empty"):
        ti.serialize_input(input_pb2.Input())


def test_example_signature_checks() -> None:
    esig = ti.example_signature(SIGS, "", ti.CLASSIFY_METHOD)
    assert (esig.name, esig.input, esig.outputs) == ("serving_default", "inputs",
                                                     ("classes", "scores"))
    assert ti.example_signature(SIGS, "regress", ti.REGRESS_METHOD).outputs == ("outputs",)
    with pytest.raises(InvalidArgument, match="No signature was found with the name: nope"):
        ti.example_signature(SIGS, "nope", ti.CLASSIFY_METHOD)
    with pytest.raises(InvalidArgument, match=re.escape(
            "Expected regression signature method_name to be tensorflow/serving/regress. "
            "Was: tensorflow/serving/classify")):
        ti.example_signature(SIGS, "", ti.REGRESS_METHOD)
    odd = {"serving_default": Signature(method_name=ti.CLASSIFY_METHOD,
                                        inputs={"inputs": spec("string")},
                                        outputs={"probabilities": spec("float32")})}
    with pytest.raises(FailedPrecondition, match="at least one of"):
        ti.example_signature(odd, "", ti.CLASSIFY_METHOD)


def test_wants_examples() -> None:
    tf_md = ModelMetadata(platform="tensorflow", signatures=SIGS)
    assert ti.wants_examples(tf_md, "", ti.CLASSIFY_METHOD)
    assert ti.wants_examples(tf_md, "predict", ti.CLASSIFY_METHOD)  # TF Serving's error, then
    onnx_md = ModelMetadata(signatures={"serving_default": PREDICT},
                            labels=("a", "b"), scores_output="y")
    assert not ti.wants_examples(onnx_md, "", ti.CLASSIFY_METHOD)


def strings(rows: list[list[bytes]]) -> np.ndarray:
    arr = np.empty((len(rows), len(rows[0])), dtype=object)
    arr[:] = rows
    return arr


def test_classifications_and_results() -> None:
    esig = ti.example_signature(SIGS, "", ti.CLASSIFY_METHOD)
    outputs = {"classes": strings([[b"cat", b"dog"], [b"cat", b"dog"]]),
               "scores": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)}
    rows = ti.classifications(esig, outputs, 2)
    assert rows == [[("cat", 0.25), ("dog", 0.75)], [("cat", 0.5), ("dog", 0.5)]]
    assert ti.classify_json(rows) == {"result": [[["cat", 0.25], ["dog", 0.75]],
                                                 [["cat", 0.5], ["dog", 0.5]]]}
    result = ti.classification_result(rows, classification_pb2.ClassificationResult())
    assert result.classifications[1].classes[0].label == "cat"
    only_scores = ti.ExampleSignature(name="s", method_name=ti.CLASSIFY_METHOD, input="inputs",
                                      outputs=("scores",))
    assert ti.classifications(only_scores, outputs, 2)[0] == [("", 0.25), ("", 0.75)]
    with pytest.raises(InvalidArgument, match="batch size of 3"):
        ti.classifications(esig, outputs, 3)
    with pytest.raises(InvalidArgument, match="should match in dim_size"):
        ti.classifications(esig, {**outputs, "classes": strings([[b"a"], [b"b"]])}, 2)


def test_regressions() -> None:
    esig = ti.example_signature(SIGS, "regress", ti.REGRESS_METHOD)
    assert ti.regressions(esig, {"outputs": np.array([[1.5], [2.0]], np.float32)}, 2) == [1.5, 2.0]
    assert ti.regress_json([1.5]) == {"result": [1.5]}
    with pytest.raises(InvalidArgument, match="either"):
        ti.regressions(esig, {"outputs": np.zeros((2, 2), np.float32)}, 2)


def test_tfrecord_framing(tmp_path: Any) -> None:
    assert crc32c(b"123456789") == 0xE3069283  # CRC-32C's check value
    write_tfrecords(tmp_path / "r", [b"a", b"bc"])
    assert list(read_tfrecords(tmp_path / "r")) == [b"a", b"bc"]
