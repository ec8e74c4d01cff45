"""KServe V2 / Open Inference Protocol tensors <-> numpy, shared by the REST and gRPC codecs.

Datatypes are V2's names (FP32, BYTES, ...). Raw data (the binary extension, gRPC raw contents)
is flattened row-major little-endian; a BYTES element is a 4-byte little-endian length then its
bytes. Also Triton's classification extension: an output's top k as ``b"score:index:label"``.
Pure functions.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from corolla.errors import InvalidArgument
from corolla.tensors import FROM_V2_DTYPE, V2_DTYPES, checked_shape, dtype_name, numpy_dtype

MAX_ELEMENTS = 1 << 28


def numpy_of(datatype: str) -> np.dtype[Any]:
    name = FROM_V2_DTYPE.get(datatype)
    if name is None:
        raise InvalidArgument(f"unsupported datatype {datatype!r}")
    return numpy_dtype(name)


def datatype_of(array: np.ndarray) -> str:
    return V2_DTYPES[dtype_name(array.dtype)]


def check_shape(name: str, shape: Any, *, max_elements: int = MAX_ELEMENTS) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"input {name!r}: shape must be a list of integers")
    return checked_shape(shape, max_elements, f"input {name!r}: shape")[0]


def element_count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES elements as 4-byte little-endian lengths each followed by the bytes."""
    parts: list[bytes] = []
    for x in array.reshape(-1):
        b = x.encode("utf-8") if isinstance(x, str) else bytes(x)
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(name: str, raw: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    n = element_count(shape)
    # Each element takes at least its 4-byte length: refuse a shape the data cannot fill before
    # allocating its array (8 bytes of data must not claim an array of 2**28 pointers).
    if 4 * n > len(raw):
        raise InvalidArgument(
            f"input {name!r}: {len(raw)} bytes of BYTES data cannot hold the {n} elements of "
            f"shape {list(shape)} (each takes at least 4)")
    out = np.empty(n, dtype=object)
    view, pos, end = memoryview(raw), 0, len(raw)
    for i in range(n):
        if pos + 4 > end:
            raise InvalidArgument(f"input {name!r}: BYTES data ends after {i} of {n} elements")
        (length,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + length > end:
            raise InvalidArgument(f"input {name!r}: BYTES element {i} overruns the data")
        out[i] = bytes(view[pos:pos + length])
        pos += length
    if pos != end:
        raise InvalidArgument(f"input {name!r}: {end - pos} bytes left over after {n} elements")
    return out.reshape(shape)


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview
             ) -> np.ndarray:
    """Raw (binary extension or gRPC raw contents) data to an array."""
    if datatype == "BYTES":
        return deserialize_bytes(name, raw, shape)
    dtype = numpy_of(datatype)
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input {name!r}: {len(raw)} bytes of data but {datatype} shape {list(shape)} "
            f"needs {expected}")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False
                                                                     ).reshape(shape)


def to_raw(array: np.ndarray) -> bytes:
    if array.dtype == object:
        return serialize_bytes(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def classification(scores: np.ndarray, labels: Sequence[str], k: int) -> np.ndarray:
    """Triton's classification output: the top ``k`` of each row as ``b"score:index:label"``."""
    rows = scores.reshape(scores.shape[0], -1) if scores.ndim else scores.reshape(1, 1)
    k = min(k, rows.shape[1])
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    out = np.empty((rows.shape[0], k), dtype=object)
    for i, row in enumerate(order):
        for j, idx in enumerate(row):
            text = f"{float(rows[i, idx]):f}:{idx}"
            out[i, j] = (f"{text}:{labels[idx]}" if idx < len(labels) else text).encode()
    return out


def parse_classification(entry: bytes | str) -> tuple[str, int, float]:
    """``b"0.98:2:daisy"`` -> ("daisy", 2, 0.98); the label is "" when the model has none."""
    text = entry.decode("utf-8") if isinstance(entry, bytes) else entry
    score, index, *label = text.split(":", 2)
    return (label[0] if label else ""), int(index), float(score)
