"""Decoders refuse what the bytes received cannot back, before allocating (issue 22.1, 22.2).

Each case is a request a few bytes long that used to allocate gigabytes (or crash with a
ValueError answered 500); tracemalloc checks that the refusal allocated almost nothing.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from corolla.errors import InvalidArgument
from corolla.protocols import kserve_v2, kserve_v2_grpc
from corolla.protocols.tensor_proto import to_numpy
from corolla.protos.gen import grpc_predict_v2_pb2 as v2pb
from corolla.protos.gen.tensorflow.core.framework import tensor_pb2, types_pb2
from corolla.tensors import MAX_DIMENSION, MAX_RANK, Expansion, checked_shape

# Refusals may allocate this much (messages, small temporaries); the cases claim GiBs.
SMALL = 1 << 20


@pytest.fixture
def peak() -> Iterator[Callable[[], int]]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    yield lambda: tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()


def _tensor(dtype: int, shape: list[int], **fields: Any) -> Any:
    tp = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for d in shape:
        tp.tensor_shape.dim.add().size = d
    return tp


# ---- TensorProto (TF gRPC) ----------------------------------------------------------------


def test_one_float_cannot_fill_a_gib(peak: Callable[[], int]) -> None:
    tp = _tensor(types_pb2.DT_FLOAT, [1 << 28], float_val=[1.0])
    assert len(tp.SerializeToString()) < 20
    with pytest.raises(InvalidArgument, match="padding float_val"):
        to_numpy(tp, expansion=Expansion(256 << 20))
    assert peak() < SMALL


def test_one_string_cannot_fill_two_gib(peak: Callable[[], int]) -> None:
    tp = _tensor(types_pb2.DT_STRING, [1 << 28], string_val=[b"x"])
    with pytest.raises(InvalidArgument, match="padding string_val"):
        to_numpy(tp)
    assert peak() < SMALL


def test_padding_within_the_allowance_still_works() -> None:
    # TF's make_tensor_proto(0.5, shape=[2, 3]) writes one value: TF Serving pads it.
    tp = _tensor(types_pb2.DT_FLOAT, [2, 3], float_val=[0.5])
    np.testing.assert_array_equal(to_numpy(tp), np.full((2, 3), 0.5, np.float32))
    assert to_numpy(_tensor(types_pb2.DT_INT32, [4])).tolist() == [0, 0, 0, 0]


def test_the_allowance_is_shared_by_a_request_s_tensors() -> None:
    budget = Expansion(100)
    to_numpy(_tensor(types_pb2.DT_FLOAT, [20], float_val=[1.0]), expansion=budget)  # 76 bytes
    assert budget.left == 24
    with pytest.raises(InvalidArgument, match="at most 100 bytes"):
        to_numpy(_tensor(types_pb2.DT_FLOAT, [20], float_val=[1.0]), expansion=budget)


def test_string_shape_zero_is_an_empty_tensor() -> None:
    assert to_numpy(_tensor(types_pb2.DT_STRING, [0])).shape == (0,)


@pytest.mark.parametrize("shape", [[0, (1 << 63) - 1], [0, MAX_DIMENSION + 1], [1] * (MAX_RANK + 1),
                                   [-1], [1 << 20, 1 << 20]])
def test_shapes_no_array_can_have(shape: list[int], peak: Callable[[], int]) -> None:
    with pytest.raises(InvalidArgument):
        to_numpy(_tensor(types_pb2.DT_FLOAT, shape))
    assert peak() < SMALL


def test_checked_shape_accepts_zero_sized_and_normal_shapes() -> None:
    assert checked_shape([0, 3], 10, "shape") == ((0, 3), 0)
    assert checked_shape([10, 0, 10], 100, "shape") == ((10, 0, 10), 0)
    with pytest.raises(InvalidArgument, match="non-zero dimensions"):
        checked_shape([MAX_DIMENSION, 0], 10, "shape")
    assert checked_shape([], 10, "shape") == ((), 1)


# ---- KServe V2 REST (JSON and binary) and gRPC -------------------------------------------


def _v2_binary(inputs: list[dict[str, Any]], data: bytes) -> tuple[bytes, int]:
    header = json.dumps({"inputs": inputs}).encode()
    return header + data, len(header)


def test_v2_binary_bytes_shape_must_fit_the_data(peak: Callable[[], int]) -> None:
    body, n = _v2_binary([{"name": "x", "datatype": "BYTES", "shape": [1 << 28],
                           "parameters": {"binary_data_size": 8}}], b"\x04\0\0\0abcd")
    with pytest.raises(InvalidArgument, match="cannot hold the 268435456 elements"):
        kserve_v2.decode_request(body, n)
    assert peak() < SMALL


def test_v2_binary_bytes_that_fit_decode() -> None:
    body, n = _v2_binary([{"name": "x", "datatype": "BYTES", "shape": [2],
                           "parameters": {"binary_data_size": 9}}],
                         b"\x01\0\0\0a\0\0\0\0")
    assert kserve_v2.decode_request(body, n).inputs["x"].tolist() == [b"a", b""]


@pytest.mark.parametrize(("datatype", "shape"), [
    ("FP32", [0, 1 << 63]), ("BYTES", [0, 1 << 63]), ("FP32", [0, MAX_DIMENSION + 1]),
    ("INT8", [1] * (MAX_RANK + 1)), ("FP32", [1 << 62, 1 << 62, 0]),
    ("FP32", [0, 1 << 31, 1 << 31, 1 << 31]), ("BYTES", [1 << 20, 0, 1 << 20]),
])
def test_v2_json_impossible_shapes(datatype: str, shape: list[int], peak: Callable[[], int]
                                   ) -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape,
                                   "data": []}]}).encode()
    with pytest.raises(InvalidArgument):
        kserve_v2.decode_request(body)
    assert peak() < SMALL


def test_v2_json_zero_rows_decode_to_an_empty_tensor() -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [0],
                                   "data": []}]}).encode()
    assert kserve_v2.decode_request(body).inputs["x"].shape == (0,)


def test_v2_grpc_raw_bytes_shape_must_fit_the_data(peak: Callable[[], int]) -> None:
    req = v2pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="BYTES", shape=[1 << 28])
    req.raw_input_contents.append(b"\x00\x00\x00\x00")
    with pytest.raises(InvalidArgument, match="cannot hold"):
        kserve_v2_grpc.decode_request(req)
    assert peak() < SMALL


def test_v2_grpc_shape_with_a_huge_dimension() -> None:
    req = v2pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="FP32", shape=[0, (1 << 63) - 1])
    req.raw_input_contents.append(b"")
    with pytest.raises(InvalidArgument, match="dimension over"):
        kserve_v2_grpc.decode_request(req)
