"""TensorProto <-> numpy, both encodings, every Corolla dtype."""

from __future__ import annotations

import numpy as np
import pytest

from corolla.errors import InvalidArgument
from corolla.protocols.tensor_proto import from_numpy, to_numpy
from corolla.protos.gen.tensorflow.core.framework import tensor_pb2, types_pb2
from corolla.tensors import NUMPY_DTYPES

TensorProto = tensor_pb2.TensorProto

NUMERIC = [n for n in NUMPY_DTYPES if n != "string"]


def _sample(name: str) -> np.ndarray:
    if name == "bool":
        return np.array([[True, False, True], [False, False, True]])
    dtype = np.dtype(name)
    if dtype.kind == "f":
        return np.array([[0.5, -1.25, 3.0], [1e-3, 2.0, -0.0]], dtype=dtype)
    info = np.iinfo(dtype)
    return np.array([[info.min, info.max, 0], [1, 2, 3]], dtype=dtype)


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("content", [False, True])
def test_round_trip_numeric(name: str, content: bool) -> None:
    a = _sample(name)
    tp = TensorProto.FromString(from_numpy(a, content=content).SerializeToString())
    assert bool(tp.tensor_content) == content
    b = to_numpy(tp)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("name", "field"), [
    ("float32", "float_val"), ("float64", "double_val"), ("int32", "int_val"),
    ("int16", "int_val"), ("int8", "int_val"), ("uint8", "int_val"), ("uint16", "int_val"),
    ("int64", "int64_val"), ("uint32", "uint32_val"), ("uint64", "uint64_val"),
    ("bool", "bool_val"), ("float16", "half_val"),
])
def test_typed_field_per_dtype(name: str, field: str) -> None:
    tp = from_numpy(_sample(name))
    assert len(getattr(tp, field)) == 6


def test_half_val_is_bit_patterns() -> None:
    tp = TensorProto(dtype=types_pb2.DT_HALF, half_val=[0x3C00, 0xC000])  # 1.0, -2.0
    tp.tensor_shape.dim.add().size = 2
    np.testing.assert_array_equal(to_numpy(tp), np.array([1.0, -2.0], dtype=np.float16))


def test_strings() -> None:
    a = np.array([[b"a", b"\xff\x00"], [b"", b"xyz"]], dtype=object)
    tp = from_numpy(a)
    assert tp.dtype == types_pb2.DT_STRING and list(tp.string_val)[1] == b"\xff\x00"
    b = to_numpy(tp)
    assert b.dtype == object and b.shape == (2, 2) and b.tolist() == a.tolist()
    assert list(from_numpy(np.array(["é"])).string_val) == ["é".encode()]


def test_tensor_content_is_little_endian() -> None:
    tp = from_numpy(np.array([1], dtype=">i4"), content=True)
    assert tp.tensor_content == b"\x01\x00\x00\x00"


@pytest.mark.parametrize(("field", "values", "dims", "expected"), [
    ("float_val", [2.5], [2, 2], [[2.5, 2.5], [2.5, 2.5]]),      # one value fills
    ("float_val", [], [3], [0.0, 0.0, 0.0]),                        # none means zeros
    ("float_val", [1.0, 2.0], [4], [1.0, 2.0, 2.0, 2.0]),           # padded with the last
    ("float_val", [7.0], [], 7.0),                                  # scalar
    ("float_val", [], [0, 3], np.zeros((0, 3))),                    # empty
])
def test_typed_fill_rules(field: str, values: list[float], dims: list[int], expected: object
                          ) -> None:
    tp = TensorProto(dtype=types_pb2.DT_FLOAT, **{field: values})
    for d in dims:
        tp.tensor_shape.dim.add().size = d
    out = to_numpy(tp)
    np.testing.assert_array_equal(out, np.asarray(expected, dtype=np.float32))
    assert out.shape == tuple(dims)


def test_string_broadcast() -> None:
    tp = TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"img"])
    tp.tensor_shape.dim.add().size = 3
    assert to_numpy(tp).tolist() == [b"img"] * 3


def _proto(dtype: int, dims: list[int], **fields: object) -> TensorProto:
    tp = TensorProto(dtype=dtype, **fields)
    for d in dims:
        tp.tensor_shape.dim.add().size = d
    return tp


@pytest.mark.parametrize(("tp", "message"), [
    (_proto(types_pb2.DT_FLOAT, [2], float_val=[1, 2, 3]), "float_val has 3 values"),
    (_proto(types_pb2.DT_FLOAT, [3], tensor_content=b"\x00" * 8), "tensor_content has 8 bytes"),
    (_proto(types_pb2.DT_COMPLEX64, [1], scomplex_val=[1, 2]), "unsupported tensor dtype"),
    (_proto(types_pb2.DT_BFLOAT16, [1], half_val=[1]), "DT_BFLOAT16"),
    (_proto(types_pb2.DT_INVALID, [1]), "DT_INVALID"),
    (_proto(types_pb2.DT_FLOAT, [-1], float_val=[1]), "negative dimension"),
    (_proto(types_pb2.DT_UINT8, [1], int_val=[256]), "out of range for uint8"),
    (_proto(types_pb2.DT_HALF, [1], half_val=[70000]), "outside 16 bits"),
    (_proto(types_pb2.DT_STRING, [1], tensor_content=b"abc"), "string_val"),
    (_proto(types_pb2.DT_FLOAT, [1 << 20, 1 << 20], float_val=[1]), "more than"),
    (_proto(55, [1]), "55"),
])
def test_errors(tp: TensorProto, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        to_numpy(tp)


def test_unknown_rank_is_rejected() -> None:
    tp = TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1])
    tp.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidArgument, match="unknown rank"):
        to_numpy(tp)


def test_unsupported_numpy_dtype() -> None:
    with pytest.raises(InvalidArgument):
        from_numpy(np.array([1 + 2j]))
