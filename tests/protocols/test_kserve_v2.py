"""KServe V2 REST (JSON + binary extension) and gRPC codecs."""

from __future__ import annotations

import base64
import struct
import warnings

import numpy as np
import orjson
import pytest

from corolla.errors import InvalidArgument
from corolla.model_dir import ImagePreprocessing, Signature, TensorSpec
from corolla.protocols import kserve_v2 as v2
from corolla.protocols import kserve_v2_grpc as v2g
from corolla.protocols import kserve_v2_tensors as v2t
from corolla.protos.gen import grpc_predict_v2_pb2 as pb

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import tritonclient.http as triton_http
    import tritonclient.utils as triton_utils

SAMPLES = {
    "FP32": np.array([[0.5, -1.5], [2.0, 3.25]], dtype=np.float32),
    "FP64": np.array([1e-300, 2.0], dtype=np.float64),
    "FP16": np.array([0.5, -2.0], dtype=np.float16),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "INT16": np.array([-32768, 32767], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "UINT8": np.array([0, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "BOOL": np.array([True, False]),
    "BYTES": np.array([[b"a", b""], [b"\xff\xd8\xff", b"xyz"]], dtype=object),
}


def _body(doc: dict) -> bytes:
    return orjson.dumps(doc)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_raw_round_trip(datatype: str) -> None:
    a = SAMPLES[datatype]
    b = v2t.from_raw("x", datatype, a.shape, v2t.to_raw(a))
    assert b.shape == a.shape and v2t.datatype_of(b) == datatype
    np.testing.assert_array_equal(a, b)


def test_bytes_wire_format_matches_triton() -> None:
    a = SAMPLES["BYTES"]
    assert v2t.serialize_bytes(a) == triton_utils.serialize_byte_tensor(a).item()
    assert v2t.serialize_bytes(np.array([b"ab"], dtype=object)) == struct.pack("<I", 2) + b"ab"


@pytest.mark.parametrize("datatype", [d for d in sorted(SAMPLES) if d != "FP16"])
def test_json_request(datatype: str) -> None:
    a = SAMPLES[datatype]
    data = ([x.decode("latin-1") for x in a.reshape(-1)] if datatype == "BYTES"
            else a.tolist())
    if datatype == "BYTES":
        a = np.array([x.decode("latin-1").encode() for x in a.reshape(-1)],
                     dtype=object).reshape(a.shape)
    body = _body({"id": "r1", "inputs": [
        {"name": "x", "datatype": datatype, "shape": list(a.shape), "data": data}]})
    req = v2.decode_request(body)
    assert req.id == "r1" and req.datatypes == {"x": datatype}
    np.testing.assert_array_equal(req.inputs["x"], a)
    assert req.inputs["x"].dtype == a.dtype


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_triton_binary_request(datatype: str) -> None:
    a = SAMPLES[datatype]
    inp = triton_http.InferInput("x", list(a.shape), datatype)
    inp.set_data_from_numpy(a, binary_data=True)
    out = triton_http.InferRequestedOutput("y", binary_data=True)
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [inp], outputs=[out], request_id="7")
    req = v2.decode_request(body, header_length)
    np.testing.assert_array_equal(req.inputs["x"], a)
    assert req.outputs[0].name == "y" and req.outputs[0].binary is True and req.id == "7"


def test_nested_json_data_and_b64_bytes() -> None:
    body = _body({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
        {"name": "b", "datatype": "BYTES", "shape": [2], "parameters": {"content_type": "base64"},
         "data": [base64.b64encode(b"\x00\x01").decode(), ""]},
        {"name": "c", "datatype": "BYTES", "shape": [1], "data": [{"b64": "AAE="}]},
    ]})
    req = v2.decode_request(body)
    assert req.inputs["a"].tolist() == [[1, 2], [3, 4]]
    assert req.inputs["b"].tolist() == [b"\x00\x01", b""]
    assert req.inputs["c"].tolist() == [b"\x00\x01"]


def test_mixed_json_and_binary_inputs() -> None:
    header = _body({"inputs": [
        {"name": "j", "datatype": "INT32", "shape": [1], "data": [5]},
        {"name": "b", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
    ], "parameters": {"binary_data_output": True}})
    req = v2.decode_request(header + np.array([1, 2], "<f4").tobytes(), len(header))
    assert req.inputs["j"].tolist() == [5] and req.inputs["b"].tolist() == [1.0, 2.0]
    assert req.binary_output is True


def _fp32(**extra: object) -> dict:
    return {"name": "x", "datatype": "FP32", "shape": [2], **extra}


@pytest.mark.parametrize(("doc", "tail", "message"), [
    ({"inputs": []}, b"", "non-empty 'inputs'"),
    ({"inputs": [_fp32(data=[1])]}, b"", "1 values but shape \\[2\\] holds 2"),
    ({"inputs": [_fp32(data=["a", "b"])]}, b"", "not a list of FP32"),
    ({"inputs": [_fp32()]}, b"", "neither 'data' nor binary_data_size"),
    ({"inputs": [_fp32(data=[1, 2]), _fp32(data=[1, 2])]}, b"", "appears twice"),
    ({"inputs": [{**_fp32(data=[1, 2]), "shape": [-2]}]}, b"", "negative"),
    ({"inputs": [{**_fp32(data=[1, 2]), "shape": "2"}]}, b"", "list of integers"),
    ({"inputs": [{**_fp32(data=[1, 2]), "datatype": "BF16"}]}, b"", "unsupported datatype"),
    ({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}]}, b"",
     "UINT8"),
    ({"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}]}, b"", "BOOL"),
    ({"inputs": [_fp32(parameters={"binary_data_size": 8})]}, b"\x00" * 4, "overruns"),
    ({"inputs": [_fp32(parameters={"binary_data_size": 4})]}, b"\x00" * 4, "needs 8"),
    ({"inputs": [_fp32(data=[1, 2])]}, b"\x00", "belong to no input"),
    ({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1],
                  "parameters": {"binary_data_size": 6}}]}, b"\x09\x00\x00\x00ab", "overruns"),
])
def test_request_errors(doc: dict, tail: bytes, message: str) -> None:
    header = _body(doc)
    with pytest.raises(InvalidArgument, match=message):
        v2.decode_request(header + tail, len(header) if tail else None)


def test_invalid_json_and_header_length() -> None:
    with pytest.raises(InvalidArgument, match="invalid JSON"):
        v2.decode_request(b"{")
    with pytest.raises(InvalidArgument, match="outside the body"):
        v2.decode_request(b"{}", 5)


def test_json_response() -> None:
    outputs = {"scores": np.array([[0.25, 0.75]], np.float32),
               "labels": np.array([b"daisy"], dtype=object)}
    body, header_length = v2.encode_response(model_name="m", model_version="2", request_id="q",
                                             outputs=outputs)
    assert header_length is None
    doc = orjson.loads(body)
    assert doc == {"model_name": "m", "model_version": "2", "id": "q", "outputs": [
        {"name": "scores", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
        {"name": "labels", "datatype": "BYTES", "shape": [1], "data": ["daisy"]}]}


def test_binary_response_read_by_tritonclient() -> None:
    outputs = {"scores": np.array([[0.25, 0.75]], np.float32),
               "half": np.array([1.5], np.float16),
               "labels": np.array([b"daisy", b"rose"], dtype=object)}
    req = v2.InferRequest(id="", inputs={}, datatypes={}, binary_output=True, outputs=(
        v2.RequestedOutput(name="labels"), v2.RequestedOutput(name="scores", binary=False),
        v2.RequestedOutput(name="half")))
    body, header_length = v2.encode_response(model_name="m", model_version="1", request_id="",
                                             outputs=outputs, request=req)
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert [o["name"] for o in header["outputs"]] == ["labels", "scores", "half"]
    assert "data" in header["outputs"][1] and "data" not in header["outputs"][0]
    result = triton_http.InferResult.from_response_body(body, header_length=header_length)
    for name, a in outputs.items():
        np.testing.assert_array_equal(result.as_numpy(name), a)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_grpc_raw_round_trip(datatype: str) -> None:
    a = SAMPLES[datatype]
    msg = pb.ModelInferRequest.FromString(
        v2g.encode_request({"x": a}, model_name="m", outputs=["y"]).SerializeToString())
    req = v2g.decode_request(msg)
    np.testing.assert_array_equal(req.inputs["x"], a)
    assert req.output_names == ("y",)
    resp = v2g.encode_response(model_name="m", model_version="1", request_id="",
                               outputs={"y": a})
    np.testing.assert_array_equal(v2g.decode_response(resp)["y"], a)


@pytest.mark.parametrize("datatype", [d for d in sorted(SAMPLES) if d != "FP16"])
def test_grpc_typed_contents(datatype: str) -> None:
    a = SAMPLES[datatype]
    resp = v2g.encode_response(model_name="m", model_version="1", request_id="",
                               outputs={"y": a}, raw=False)
    assert not resp.raw_output_contents
    np.testing.assert_array_equal(v2g.decode_response(resp)["y"], a)
    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="x", datatype=datatype, shape=a.shape)
    t.contents.CopyFrom(resp.outputs[0].contents)
    out = v2g.decode_request(req).inputs["x"]
    np.testing.assert_array_equal(out, a)
    assert out.dtype == a.dtype


def test_grpc_parameters() -> None:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="INT32", shape=[1]).contents.int_contents.append(1)
    v2g.set_parameter(req.parameters["flag"], True)
    v2g.set_parameter(req.parameters["k"], 3)
    v2g.set_parameter(req.parameters["ratio"], 0.5)
    v2g.set_parameter(req.parameters["s"], "x")
    assert v2g.decode_request(req).parameters == {"flag": True, "k": 3, "ratio": 0.5, "s": "x"}


def _grpc_req(datatype: str, shape: list[int], **contents: object) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype=datatype, shape=shape,
                   contents=pb.InferTensorContents(**contents))
    return req


@pytest.mark.parametrize(("req", "message"), [
    (pb.ModelInferRequest(model_name="m"), "no inputs"),
    (_grpc_req("FP32", [2], fp32_contents=[1.0]), "1 values in fp32_contents"),
    (_grpc_req("FP16", [1]), "raw_input_contents"),
    (_grpc_req("UINT8", [1], uint_contents=[256]), "out of range"),
    (_grpc_req("BF16", [1]), "unsupported datatype"),
    (_grpc_req("FP32", [-1]), "negative"),
])
def test_grpc_request_errors(req: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        v2g.decode_request(req)


def test_grpc_raw_and_contents_mixed_is_rejected() -> None:
    req = _grpc_req("FP32", [1], fp32_contents=[1.0])
    req.raw_input_contents.append(b"\x00" * 4)
    with pytest.raises(InvalidArgument, match="contents must be empty"):
        v2g.decode_request(req)
    req = _grpc_req("FP32", [1])
    req.ClearField("inputs")
    req.inputs.add(name="a", datatype="FP32", shape=[1])
    req.inputs.add(name="b", datatype="FP32", shape=[1])
    req.raw_input_contents.append(b"\x00" * 4)
    with pytest.raises(InvalidArgument, match="1 entries for 2 inputs"):
        v2g.decode_request(req)


def test_metadata() -> None:
    sig = Signature(inputs={"image": TensorSpec(name="input:0", dtype="float32",
                                                shape=(-1, 224, 224, 3))},
                    outputs={"scores": TensorSpec(name="s", dtype="float32", shape=(-1, 5)),
                             "anything": TensorSpec(name="a", dtype="string", shape=None)})
    doc = v2.model_metadata("flowers", [1, 2], "onnx", sig)
    assert doc == {"name": "flowers", "versions": ["1", "2"], "platform": "onnxruntime_onnx",
                   "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 224, 224, 3]}],
                   "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 5]},
                               {"name": "anything", "datatype": "BYTES", "shape": [-1]}]}
    msg = v2g.model_metadata("flowers", [1, 2], "onnx", sig)
    assert msg.platform == "onnxruntime_onnx" and list(msg.inputs[0].shape) == [-1, 224, 224, 3]
    assert v2.server_metadata()["extensions"] == [
        "binary_tensor_data", "classification", "model_configuration"]


def test_model_config() -> None:
    pre = ImagePreprocessing(input="image", height=224, width=224, layout="NCHW")
    sig = Signature(inputs={"image": TensorSpec(name="input:0", dtype="float32",
                                                shape=(-1, 3, 224, 224))},
                    outputs={"scores": TensorSpec(name="s", dtype="float32", shape=(-1, 5)),
                             "labels": TensorSpec(name="l", dtype="string", shape=(-1,))})
    doc = v2.model_config("flowers", "onnx", sig, pre, 8)
    assert doc == {"name": "flowers", "platform": "onnxruntime_onnx", "backend": "onnxruntime",
                   "max_batch_size": 8,
                   "input": [{"name": "image", "data_type": "TYPE_FP32",
                              "format": "FORMAT_NCHW", "dims": [3, 224, 224]}],
                   "output": [{"name": "scores", "data_type": "TYPE_FP32", "dims": [5]},
                              {"name": "labels", "data_type": "TYPE_STRING", "dims": []}]}
    msg = v2g.model_config(doc)
    assert msg.config.max_batch_size == 8 and list(msg.config.input[0].dims) == [3, 224, 224]
    assert msg.config.input[0].format == 2 and msg.config.output[1].data_type == 13  # Triton's
    # A fixed first dimension (or an unknown rank) is no batch dimension: max_batch_size 0 and
    # the full shapes; no preprocessing, no format.
    fixed = Signature(inputs={"x": TensorSpec(name="x", dtype="int64", shape=(4, 2))},
                      outputs={"y": TensorSpec(name="y", dtype="float64", shape=None)})
    doc = v2.model_config("m", "tensorflow", fixed, None, 32)
    assert doc["platform"] == "tensorflow_savedmodel" and doc["max_batch_size"] == 0
    assert doc["input"] == [{"name": "x", "data_type": "TYPE_INT64", "format": "FORMAT_NONE",
                             "dims": [4, 2]}]
    assert doc["output"] == [{"name": "y", "data_type": "TYPE_FP64", "dims": [-1]}]


def test_classification_extension() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
    out = v2t.classification(scores, ["a", "b", "c"], 2)
    assert out.shape == (2, 2)
    assert out.tolist() == [[b"0.700000:1:b", b"0.200000:2:c"], [b"0.500000:0:a", b"0.250000:1:b"]]
    assert v2t.classification(scores, (), 1).tolist() == [[b"0.700000:1"], [b"0.500000:0"]]
    assert v2t.classification(scores, ["a"], 9).shape == (2, 3)
    assert v2t.parse_classification(b"0.700000:1:b:c") == ("b:c", 1, 0.7)
    assert v2t.parse_classification("0.5:0") == ("", 0, 0.5)
    with pytest.raises(InvalidArgument, match="classification"):
        v2.classification_count(v2.RequestedOutput(name="y", parameters={"classification": -1}))
