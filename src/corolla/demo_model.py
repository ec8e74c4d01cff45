"""A small, real image classifier built without training: the dominant colour of a photo.

It is a genuine ONNX CNN (a 1x1 convolution over the normalised pixels, global average pooling,
a dense layer and softmax) whose weights are set analytically, so that it classifies images as
red, green, blue, white or black. Tests and the quick start use it where the trained flowers
model is not needed: it is tiny (a few hundred bytes), loads in milliseconds, and its answers are
predictable (a red photo is "red").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from corolla.model_dir import (
    ImagePreprocessing,
    ModelMetadata,
    Signature,
    TensorSpec,
    write_metadata,
)
from corolla.model_publish import stage_version

LABELS = ("red", "green", "blue", "white", "black")


def build_onnx(size: int = 64) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # Features after the 1x1 conv (inputs are pixels in [0, 1], NCHW after the transpose):
    # r, g, b and their mean; pooled over the image they say which colour dominates.
    conv_w = np.zeros((4, 3, 1, 1), np.float32)
    for c in range(3):
        conv_w[c, c, 0, 0] = 1.0
        conv_w[3, c, 0, 0] = 1.0 / 3.0
    # logits = W @ [r, g, b, mean] + bias
    dense = np.array([
        [8.0, -4.0, -4.0, 0.0],    # red: r high, g and b low
        [-4.0, 8.0, -4.0, 0.0],    # green
        [-4.0, -4.0, 8.0, 0.0],    # blue
        [0.0, 0.0, 0.0, 6.0],      # white: bright overall
        [0.0, 0.0, 0.0, -6.0],     # black: dark overall
    ], np.float32).T  # (4, 5)
    bias = np.array([0.0, 0.0, 0.0, -3.0, 3.0], np.float32)
    nodes = [
        helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w"], ["feat"]),
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "dense_w", "dense_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "corolla_colour_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                       ["batch", len(LABELS)])],
        initializer=[numpy_helper.from_array(conv_w, "conv_w"),
                     numpy_helper.from_array(dense, "dense_w"),
                     numpy_helper.from_array(bias, "dense_b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="corolla.demo_model")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def metadata(size: int = 64) -> ModelMetadata:
    return ModelMetadata(
        signatures={"serving_default": Signature(
            inputs={"images": TensorSpec(name="images", dtype="float32",
                                         shape=(-1, size, size, 3))},
            outputs={"probabilities": TensorSpec(name="probabilities", dtype="float32",
                                                 shape=(-1, len(LABELS)))},
        )},
        labels=LABELS,
        scores_output="probabilities",
        preprocessing=ImagePreprocessing(input="images", height=size, width=size,
                                         resize="squash", scale=1 / 255.0,
                                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        provenance={"builder": "corolla.demo_model", "trained": False,
                    "description": "dominant-colour classifier with analytic weights"},
    )


def write_demo_version(base_path: str | os.PathLike[str], version: int | None = None,
                       size: int = 64) -> Path:
    """Publish the demo classifier atomically as a version under ``base_path``."""
    with stage_version(base_path, version) as staged:
        (staged.path / "model.onnx").write_bytes(build_onnx(size))
        write_metadata(staged.path, metadata(size))
    assert staged.published is not None
    return staged.published
