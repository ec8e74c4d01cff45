"""Tensor vocabulary shared by every protocol and runtime.

Corolla names dtypes with numpy's names (``float32``, ``string`` for byte strings). This module
maps them to TensorFlow's DataType enum values, KServe V2 datatype names and ONNX type strings.
A request's tensors travel as ``dict[str, np.ndarray]``; strings are numpy object arrays of
``bytes``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import numpy as np

from corolla.errors import InvalidArgument

Tensors = dict[str, np.ndarray]


def batch_rows(inputs: Tensors) -> int:
    """The rows of a model run: the first dimension of its first input (1 for a scalar)."""
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1

NUMPY_DTYPES: dict[str, Any] = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "bool": np.bool_, "string": np.object_,
}  # fmt: skip

# tensorflow/core/framework/types.proto
TF_DTYPES: dict[str, int] = {
    "float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "string": 7,
    "int64": 9, "bool": 10, "uint16": 17, "float16": 19, "uint32": 22, "uint64": 23,
}  # fmt: skip
TF_DTYPE_NAMES: dict[str, str] = {
    "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int32": "DT_INT32", "uint8": "DT_UINT8",
    "int16": "DT_INT16", "int8": "DT_INT8", "string": "DT_STRING", "int64": "DT_INT64",
    "bool": "DT_BOOL", "uint16": "DT_UINT16", "float16": "DT_HALF", "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
}  # fmt: skip
FROM_TF_DTYPE: dict[int, str] = {v: k for k, v in TF_DTYPES.items()}

# KServe V2 / Open Inference Protocol datatypes
V2_DTYPES: dict[str, str] = {
    "float32": "FP32", "float64": "FP64", "float16": "FP16", "int8": "INT8", "int16": "INT16",
    "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16",
    "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL", "string": "BYTES",
}  # fmt: skip
FROM_V2_DTYPE: dict[str, str] = {v: k for k, v in V2_DTYPES.items()}

ONNX_DTYPES: dict[str, str] = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32", "tensor(uint64)": "uint64", "tensor(bool)": "bool",
    "tensor(string)": "string",
}  # fmt: skip


# No dimension of a client's tensor may exceed this, whatever the other dimensions are: a shape
# such as [0, 2**63] holds no element but is more than numpy (or a model) can take.
MAX_DIMENSION = 1 << 31
# Nor more dimensions than this (numpy takes at most 64).
MAX_RANK = 32


class Expansion:
    """What one request's decoding may still allocate beyond the bytes the request carries.

    Decoders that produce more than they received (TensorFlow's padding of a short typed field to
    its shape, a BYTES shape filled by a handful of bytes) :meth:`take` from it *before*
    allocating; the request is refused (INVALID_ARGUMENT) once it is spent. The server gives
    each request one of these, sized by its decoded-image budget (``--max_decoded_image_mib``),
    so that nothing a client sends allocates more than a small multiple of its size plus that
    budget. Used by one request at a time (not thread-safe).
    """

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise InvalidArgument(
                f"{what} would take {nbytes} bytes more than the request carries; a request "
                f"may expand by at most {self.limit} bytes in all")
        self.left -= nbytes


# What a decoder may expand a request by when its caller gives it no Expansion (client code,
# warmup files): the server's default decoded-image budget.
DEFAULT_EXPANSION_BYTES = 256 * 1024 * 1024


def checked_shape(shape: Any, max_elements: int, what: str) -> tuple[tuple[int, ...], int]:
    """A client's shape as a tuple of ints, and its element count: every dimension at least 0
    and at most :data:`MAX_DIMENSION`, and at most ``max_elements`` elements in all.
    ``what`` starts the error messages (``input 'x': shape``)."""
    dims = tuple(shape)
    if len(dims) > MAX_RANK:
        raise InvalidArgument(f"{what} has {len(dims)} dimensions; at most {MAX_RANK}")
    n = nonzero = 1
    for d in dims:
        if d < 0:
            raise InvalidArgument(f"{what} {list(dims)} has a negative dimension")
        if d > MAX_DIMENSION:
            raise InvalidArgument(f"{what} {list(dims)} has a dimension over {MAX_DIMENSION}")
        n *= d  # rank and dimensions are bounded: at most a 1,000-bit number
        nonzero *= d or 1
    if n > max_elements:
        raise InvalidArgument(f"{what} {list(dims)} has more than {max_elements} elements")
    if nonzero > max_elements:
        # No elements, but numpy refuses a shape whose other dimensions multiply past its
        # address space, and no model takes one.
        raise InvalidArgument(
            f"{what} {list(dims)} is too large: its non-zero dimensions multiply to more than "
            f"{max_elements}")
    return dims, n


def numpy_dtype(name: str) -> np.dtype[Any]:
    try:
        return np.dtype(NUMPY_DTYPES[name])
    except KeyError as exc:
        raise InvalidArgument(f"unsupported dtype {name!r}") from exc


def dtype_name(dtype: np.dtype[Any]) -> str:
    if dtype.kind in ("O", "S", "U"):
        return "string"
    name = np.dtype(dtype).name
    if name not in NUMPY_DTYPES:
        raise InvalidArgument(f"unsupported dtype {name!r}")
    return name


def shape_matches(shape: tuple[int, ...], spec: tuple[int, ...] | None) -> bool:
    """Whether a concrete shape fits a spec shape where -1 is any size."""
    if spec is None:
        return True
    if len(shape) != len(spec):
        return False
    return all(s == -1 or s == d for d, s in zip(shape, spec, strict=True))


def format_shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "[unknown rank]"
    return "[" + ",".join(str(d) for d in shape) + "]"


_URL_SAFE = str.maketrans("-_", "+/")
_ASCII_SPACE = re.compile(r"[ \t\r\n]+")


def decode_base64(text: str) -> bytes:
    """Base64 as clients send it: the standard or the URL-safe alphabet (``tf.io.encode_base64``
    writes the latter; not both in one value), padding optional, ASCII whitespace ignored
    (``base64`` wraps its output at 76 columns). Anything else raises ``binascii.Error``."""
    if " " in text or "\n" in text or "\r" in text or "\t" in text:
        text = _ASCII_SPACE.sub("", text)
    if "-" in text or "_" in text:
        if "+" in text or "/" in text:
            raise binascii.Error("mixes the standard and the URL-safe base64 alphabets")
        text = text.translate(_URL_SAFE)
    if len(text) % 4:
        body = text.rstrip("=")
        text = body + "=" * (-len(body) % 4)
    return base64.b64decode(text, validate=True)


def decode_b64_value(value: Any) -> bytes:
    """A TF Serving ``{"b64": value}``'s bytes (REST predict and classify JSON alike)."""
    if not isinstance(value, str):
        raise InvalidArgument("\"b64\" value must be a string")
    try:
        return decode_base64(value)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"Unable to base64 decode: {exc}") from exc
