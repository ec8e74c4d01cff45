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
