"""Export: a trained PyTorch classifier -> a published, self-describing model version.

Owns the ONNX export (NHWC float32 ``images`` in, softmax ``probabilities`` out, dynamic batch),
the check that ONNX Runtime reproduces PyTorch on real images within :data:`VERIFY_ATOL`, the
``corolla.json`` metadata (signature, labels, preprocessing, provenance), and int8 static
quantisation. Publication goes through :func:`corolla.model_publish.stage_version`, so a polling
server sees a version whole or not at all.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from corolla.model_dir import (
    ONNX_FILE,
    ImagePreprocessing,
    ModelMetadata,
    Signature,
    TensorSpec,
)

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
# Largest allowed |p_onnx - p_torch| over all classes and verification images. Both run float32;
# differences come from kernel summation order and are ~1e-6 in practice.
VERIFY_ATOL = 1e-4


def export_onnx(
    module: nn.Module, path: Path, spec: ImagePreprocessing, output_name: str = OUTPUT_NAME
) -> None:
    """Trace ``module`` (NHWC float32 -> tensor) to ONNX with a dynamic batch axis."""
    import onnx

    module = module.eval().cpu()
    dummy = torch.zeros(2, spec.height, spec.width, spec.channels)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer says, once per strided Slice, that it leaves those unfolded: harmless (the
        # graph is verified against PyTorch after export), and noise in every training run.
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        # dynamo=False is deliberate: the TorchScript exporter needs no onnxscript and its graph
        # is verified against PyTorch below; torch 2.9+ warns on every call that it is legacy.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed",
                                category=DeprecationWarning, module="torch")
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=[spec.input],
            output_names=[output_name],
            dynamic_axes={spec.input: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def ort_session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def verify_export(
    module: nn.Module, path: Path, inputs: np.ndarray, atol: float = VERIFY_ATOL
) -> float:
    """Max |ONNX Runtime - PyTorch| on ``inputs`` (NHWC, preprocessed); raises above ``atol``."""
    with torch.no_grad():
        expected = module.eval().cpu()(torch.from_numpy(inputs)).numpy()
    sess = ort_session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: inputs})[0]
    diff = float(np.abs(got - expected).max())
    agree = float((got.argmax(-1) == expected.argmax(-1)).mean())
    if diff > atol or agree < 1.0:
        raise RuntimeError(
            f"ONNX Runtime disagrees with PyTorch: max abs diff {diff:.3g} "
            f"(tolerance {atol:g}), top-1 agreement {agree:.3f}"
        )
    log.info("export verified on %d images: max abs diff %.3g", len(inputs), diff)
    return diff


def build_metadata(
    labels: Sequence[str], spec: ImagePreprocessing, provenance: dict[str, Any]
) -> ModelMetadata:
    sig = Signature(
        inputs={
            spec.input: TensorSpec(
                name=spec.input, dtype="float32", shape=(-1, spec.height, spec.width, spec.channels)
            )
        },
        outputs={
            OUTPUT_NAME: TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=(-1, len(labels)))
        },
    )
    return ModelMetadata(
        signatures={"serving_default": sig},
        platform="onnx",
        graph=ONNX_FILE,
        labels=tuple(labels),
        scores_output=OUTPUT_NAME,
        scores_are_probabilities=True,
        preprocessing=spec,
        provenance=provenance,
    )


class _Calibration:
    """onnxruntime.quantization CalibrationDataReader over preprocessed NHWC batches."""

    def __init__(self, name: str, batches: Iterator[np.ndarray]) -> None:
        self.name, self.batches = name, batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch}


def quantize_int8(
    fp32_path: Path, int8_path: Path, calibration: np.ndarray, input_name: str = INPUT_NAME
) -> None:
    """Static QDQ int8 quantisation (per-channel weights), calibrated on real training images."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = int8_path.with_name(int8_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs one INFO line per tensor
    try:
        batches = iter(np.array_split(calibration, max(1, len(calibration) // 16)))
        quantize_static(
            str(pre),
            str(int8_path),
            _Calibration(input_name, batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # keep the final softmax in float: probabilities near 0/1 need the resolution
            nodes_to_exclude=_softmax_nodes(pre),
        )
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)


def _softmax_nodes(path: Path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax"]
