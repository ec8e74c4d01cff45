"""``tensorflow.TensorProto`` <-> numpy.

Reading accepts both encodings TensorFlow produces: ``tensor_content`` (raw little-endian bytes,
what ``tf.make_tensor_proto`` writes for numpy arrays) and the typed ``*_val`` fields (what
``Tensor::AsProtoField`` writes). Like TensorFlow, a typed field with fewer values than the shape
holds is padded with its last value (so one value fills the tensor, and TF's compressed constants
read back whole) and an empty field means zeros; more values than the shape holds is an error.
Padding allocates what the message did not carry, so it is bounded by the request's
:class:`~corolla.tensors.Expansion` allowance, checked before allocating.
``DT_HALF`` travels in ``half_val`` as 16-bit patterns.

Writing uses the typed fields by default, as TensorFlow Serving's responses do (client code often
reads ``outputs["scores"].float_val``); ``content=True`` writes ``tensor_content`` for numeric
dtypes instead (compact and fast, what Corolla's client sends). Strings always use
``string_val``. Pure functions, safe from any thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from corolla.errors import InvalidArgument
from corolla.protos.gen.tensorflow.core.framework import tensor_pb2, types_pb2
from corolla.tensors import (
    DEFAULT_EXPANSION_BYTES,
    FROM_TF_DTYPE,
    TF_DTYPES,
    Expansion,
    checked_shape,
    dtype_name,
)

TensorProto = tensor_pb2.TensorProto

# Refuse tensors larger than this many elements (a one-value field can claim any shape).
MAX_ELEMENTS = 1 << 28

# Which typed field carries each dtype (TensorFlow's ProtoHelper<T>).
_FIELD: dict[str, str] = {
    "float32": "float_val", "float64": "double_val", "float16": "half_val",
    "int8": "int_val", "int16": "int_val", "int32": "int_val", "uint8": "int_val",
    "uint16": "int_val", "int64": "int64_val", "uint32": "uint32_val",
    "uint64": "uint64_val", "bool": "bool_val", "string": "string_val",
}  # fmt: skip
# The numpy dtype in which a typed field's values arrive.
_FIELD_DTYPE: dict[str, Any] = {
    "float_val": np.float32, "double_val": np.float64, "half_val": np.int32,
    "int_val": np.int32, "int64_val": np.int64, "uint32_val": np.uint32,
    "uint64_val": np.uint64, "bool_val": np.bool_,
}  # fmt: skip


def tf_dtype_label(value: int) -> str:
    """``DT_FLOAT`` for 1, or the number when it is not a DataType."""
    try:
        return types_pb2.DataType.Name(value)
    except ValueError:
        return str(value)


def _shape(tp: Any, *, max_elements: int) -> tuple[tuple[int, ...], int]:
    shape_proto = tp.tensor_shape
    if shape_proto.unknown_rank:
        raise InvalidArgument("tensor_shape has unknown rank; a tensor needs a concrete shape")
    return checked_shape([d.size for d in shape_proto.dim], max_elements, "tensor_shape")


def to_numpy(tp: Any, *, max_elements: int = MAX_ELEMENTS, expansion: Expansion | None = None
             ) -> np.ndarray:
    """Decode a TensorProto; strings become an object array of ``bytes``.

    Padding a short typed field to its shape allocates what the message did not carry: it is
    taken from ``expansion`` (the request's allowance; a fresh default one when None) before
    the tensor is allocated, so a one-value field cannot claim gigabytes."""
    if expansion is None:
        expansion = Expansion(DEFAULT_EXPANSION_BYTES)
    name = FROM_TF_DTYPE.get(int(tp.dtype))
    if name is None:
        raise InvalidArgument(f"unsupported tensor dtype {tf_dtype_label(tp.dtype)}")
    shape, n = _shape(tp, max_elements=max_elements)
    if name == "string":
        if tp.tensor_content:
            raise InvalidArgument("DT_STRING tensors must use string_val, not tensor_content")
        return _strings(tp.string_val, shape, n, expansion)
    dtype = np.dtype(name)
    if tp.tensor_content:
        content = tp.tensor_content
        if len(content) != n * dtype.itemsize:
            raise InvalidArgument(
                f"tensor_content has {len(content)} bytes but shape {list(shape)} of "
                f"{tf_dtype_label(tp.dtype)} needs {n * dtype.itemsize}")
        # Wire order is little-endian; frombuffer on read-only bytes does not copy.
        return np.frombuffer(content, dtype=dtype.newbyteorder("<")).astype(
            dtype, copy=False).reshape(shape)
    field = _FIELD[name]
    vals = getattr(tp, field)
    _check_count(len(vals), n, shape, field, dtype.itemsize, expansion)
    values = np.array(vals, dtype=_FIELD_DTYPE[field])
    if name == "float16":
        if values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise InvalidArgument("half_val holds values outside 16 bits")
        values = values.astype(np.uint16).view(np.float16)
    elif values.dtype != dtype:
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if values.size and (values.min() < info.min or values.max() > info.max):
                raise InvalidArgument(f"{field} holds values out of range for {name}")
        values = values.astype(dtype)
    return _fill(values, shape, n)


def padding_bytes(tp: Any) -> int:
    """The bytes that padding a short typed field to its shape would add (0 when none, and for
    tensors that :func:`to_numpy` refuses): what a memory budget must grant before decoding."""
    name = FROM_TF_DTYPE.get(int(tp.dtype))
    if name is None or tp.tensor_content or tp.tensor_shape.unknown_rank:
        return 0
    try:
        _, n = checked_shape([d.size for d in tp.tensor_shape.dim], MAX_ELEMENTS, "shape")
    except InvalidArgument:
        return 0
    count = len(getattr(tp, _FIELD[name]))
    itemsize = 8 if name == "string" else np.dtype(name).itemsize
    return max(0, n - count) * itemsize


def _check_count(count: int, n: int, shape: tuple[int, ...], field: str, itemsize: int,
                 expansion: Expansion) -> None:
    """Refuse more values than the shape holds; take the padding's bytes from the allowance."""
    if count > n:
        raise InvalidArgument(f"{field} has {count} values but shape {list(shape)} holds {n}")
    if count < n:
        expansion.take((n - count) * itemsize,
                       f"padding {field}'s {count} values to shape {list(shape)}")


def _fill(values: np.ndarray, shape: tuple[int, ...], n: int) -> np.ndarray:
    count = values.shape[0]
    if count == n:
        return values.reshape(shape)
    out = np.empty(n, dtype=values.dtype)
    if count == 0:
        out[...] = b"" if values.dtype == object else 0
    else:
        out[:count] = values
        out[count:] = values[-1]
    return out.reshape(shape)


def _strings(vals: Any, shape: tuple[int, ...], n: int, expansion: Expansion) -> np.ndarray:
    # An object array holds one pointer per element.
    _check_count(len(vals), n, shape, "string_val", np.dtype(object).itemsize, expansion)
    arr = np.empty(len(vals), dtype=object)
    arr[:] = list(vals)
    return _fill(arr, shape, n)


def from_numpy(array: Any, *, content: bool = False, out: Any = None) -> Any:
    """Encode an array as a TensorProto (into ``out`` when given, e.g. a map entry).

    Object/str/bytes arrays become DT_STRING (``str`` elements are UTF-8 encoded). Numeric arrays
    use the typed field, or ``tensor_content`` when ``content`` is true.
    """
    arr = np.asarray(array)
    name = dtype_name(arr.dtype)
    tp = TensorProto() if out is None else out
    tp.dtype = TF_DTYPES[name]
    for d in arr.shape:
        tp.tensor_shape.dim.add().size = d
    if name == "string":
        tp.string_val.extend(_as_bytes(x) for x in arr.reshape(-1))
    elif content:
        tp.tensor_content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    elif name == "float16":
        tp.half_val.extend(arr.reshape(-1).view(np.uint16).tolist())
    else:
        getattr(tp, _FIELD[name]).extend(arr.reshape(-1).tolist())
    return tp


def _as_bytes(x: object) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, bytearray | memoryview | np.bytes_):
        return bytes(x)
    if isinstance(x, np.str_):
        return str(x).encode("utf-8")
    raise InvalidArgument(f"string tensor element of type {type(x).__name__} is not bytes or str")
