"""tf.Example inputs (Classify/Regress/MultiInference) -> model input tensors."""

from __future__ import annotations

import numpy as np
import pytest

from corolla.errors import InvalidArgument
from corolla.model_dir import Signature, TensorSpec
from corolla.protocols.tf_example import examples_of, to_inputs
from corolla.protos.gen.tensorflow_serving.apis import input_pb2

IMAGE_SIG = Signature(inputs={"images": TensorSpec(name="i", dtype="float32",
                                                   shape=(-1, 2, 2, 1))}, outputs={})
TWO_SIG = Signature(inputs={"a": TensorSpec(name="a", dtype="float32", shape=(-1, 2)),
                            "b": TensorSpec(name="b", dtype="int64", shape=(-1,))}, outputs={})


def _input(*examples: dict[str, object], context: dict[str, object] | None = None
           ) -> input_pb2.Input:
    msg = input_pb2.Input()
    target = (msg.example_list_with_context if context is not None else msg.example_list)
    for features in examples:
        ex = target.examples.add()
        _fill(ex.features.feature, features)
    if context is not None:
        _fill(msg.example_list_with_context.context.features.feature, context)
    return msg


def _fill(feature_map: object, features: dict[str, object]) -> None:
    for name, value in features.items():
        f = feature_map[name]  # type: ignore[index]
        if isinstance(value, bytes):
            f.bytes_list.value.append(value)
        elif all(isinstance(v, int) for v in value):  # type: ignore[attr-defined]
            f.int64_list.value.extend(value)
        else:
            f.float_list.value.extend(value)


def test_images_by_any_single_feature_name() -> None:
    inputs = to_inputs(examples_of(_input({"image": b"jpg1"}, {"photo": b"jpg2"})), IMAGE_SIG)
    assert inputs["images"].dtype == object and inputs["images"].tolist() == [b"jpg1", b"jpg2"]


def test_floats_reshaped_to_the_row_shape() -> None:
    inputs = to_inputs(examples_of(_input({"x": [0.0, 1.0, 2.0, 3.5]})), IMAGE_SIG)
    assert inputs["images"].shape == (1, 2, 2, 1) and inputs["images"][0, 1, 1, 0] == 3.5


def test_named_features_and_context() -> None:
    msg = _input({"a": [1.5, 2.5]}, {"a": [3.5, 4.5]}, context={"b": [7]})
    inputs = to_inputs(examples_of(msg), TWO_SIG)
    assert inputs["a"].tolist() == [[1.5, 2.5], [3.5, 4.5]]
    assert inputs["b"].tolist() == [7, 7] and inputs["b"].dtype == np.int64


@pytest.mark.parametrize(("msg", "sig", "message"), [
    (input_pb2.Input(), IMAGE_SIG, "Input is empty"),
    (_input({"x": [1.0]}), IMAGE_SIG, "expects 4 per example"),
    (_input({"a": [1.5, 2.5]}), TWO_SIG, "do not match"),
    (_input({"a": [1.5, 2.5], "b": [1]}, context={"b": [2]}), TWO_SIG, "both the context"),
    (_input({"i": b"x"}, {"i": [1.0, 2.0, 3.0, 4.0]}), IMAGE_SIG, "mix bytes"),
])
def test_errors(msg: input_pb2.Input, sig: Signature, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        to_inputs(examples_of(msg), sig)
