"""``tensorflow.serving.Input`` (lists of ``tf.Example``) -> model input tensors: pure functions.

TF Serving's Classify/Regress/MultiInference feed serialized Examples to a graph that parses
them; Corolla maps features to signature inputs instead, as its REST ``:classify`` does: a
feature named like an input feeds that input, and a single-input model takes any single feature.
Context features (``ExampleListWithContext``) are merged into every example.

Each example is one row. A ``bytes_list`` of one value is an encoded image (or one string); a
``float_list``/``int64_list`` is the row's values, reshaped to the input's per-row shape when that
shape is known.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from corolla.errors import InvalidArgument
from corolla.model_dir import Signature, TensorSpec


def examples_of(input_msg: Any) -> list[dict[str, Any]]:
    """The features of each example (context merged in), as {name: Feature}."""
    kind = input_msg.WhichOneof("kind")
    if kind == "example_list":
        examples, context = input_msg.example_list.examples, {}
    elif kind == "example_list_with_context":
        lst = input_msg.example_list_with_context
        examples, context = lst.examples, dict(lst.context.features.feature)
    else:
        raise InvalidArgument("Input is empty: set example_list or example_list_with_context")
    if not examples:
        raise InvalidArgument("Input has no examples")
    rows = []
    for i, ex in enumerate(examples):
        features = dict(ex.features.feature)
        clash = set(features) & set(context)
        if clash:
            raise InvalidArgument(
                f"features {sorted(clash)} appear in both the context and example {i}")
        rows.append({**context, **features})
    return rows


def _value(name: str, feature: Any, spec: TensorSpec | None) -> Any:
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list":
        values = list(feature.bytes_list.value)
        if len(values) != 1:
            raise InvalidArgument(f"feature {name!r}: expected one bytes value, got {len(values)}")
        return values[0]
    if kind == "float_list":
        arr = np.array(feature.float_list.value, dtype=np.float32)
    elif kind == "int64_list":
        arr = np.array(feature.int64_list.value, dtype=np.int64)
    else:
        raise InvalidArgument(f"feature {name!r} is empty")
    if spec is not None and spec.shape is not None and len(spec.shape) >= 1:
        row_shape = spec.shape[1:]
        if all(d >= 0 for d in row_shape):
            n = int(np.prod(row_shape, dtype=np.int64))
            if arr.size != n:
                raise InvalidArgument(
                    f"feature {name!r} has {arr.size} values; input expects {n} per example")
            arr = arr.reshape(row_shape)
    return arr


def to_inputs(rows: list[dict[str, Any]], signature: Signature) -> dict[str, np.ndarray]:
    """Stack the examples' features into one batch per signature input."""
    aliases = list(signature.inputs)
    columns: dict[str, list[Any]] = {a: [] for a in aliases}
    for i, row in enumerate(rows):
        if len(aliases) == 1 and len(row) == 1:
            row = {aliases[0]: next(iter(row.values()))}
        unknown = sorted(set(row) - set(aliases))
        missing = sorted(set(aliases) - set(row))
        if unknown or missing:
            raise InvalidArgument(
                f"example {i}: features {sorted(row)} do not match the model's inputs {aliases}")
        for alias in aliases:
            columns[alias].append(_value(alias, row[alias], signature.inputs.get(alias)))
    return {alias: _stack(alias, values) for alias, values in columns.items()}


def _stack(alias: str, values: list[Any]) -> np.ndarray:
    if all(isinstance(v, bytes) for v in values):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    if any(isinstance(v, bytes) for v in values):
        raise InvalidArgument(f"input {alias!r}: examples mix bytes and numeric features")
    try:
        return np.stack(values)
    except ValueError as exc:
        raise InvalidArgument(f"input {alias!r}: examples have different sizes") from exc

