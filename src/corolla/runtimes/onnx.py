"""ONNX Runtime backend (the default). onnxruntime is imported only here.

A version directory holds ``model.onnx`` and, normally, ``corolla.json``. A bare ``model.onnx``
without metadata is served too: its signature is read from the graph (no labels, no image
preprocessing). ``InferenceSession.run`` releases the GIL and is safe to call from several
threads at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corolla.errors import FailedPrecondition, Internal, InvalidArgument
from corolla.model_dir import (
    METADATA_FILE,
    ONNX_FILE,
    ModelMetadata,
    Signature,
    TensorSpec,
    read_metadata,
)
from corolla.tensors import ONNX_DTYPES, Tensors

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class OnnxOptions:
    intra_op_threads: int = 0  # 0: ONNX Runtime's default (one per core)
    inter_op_threads: int = 1
    graph_optimization: str = "all"  # all | extended | basic | disabled


def _spec_from_node(node: Any) -> TensorSpec:
    dtype = ONNX_DTYPES.get(node.type)
    if dtype is None:
        raise FailedPrecondition(f"ONNX tensor {node.name!r} has unsupported type {node.type}")
    shape = tuple(d if isinstance(d, int) else -1 for d in node.shape) if node.shape else ()
    return TensorSpec(name=node.name, dtype=dtype, shape=shape)


def signature_from_session(session: Any) -> Signature:
    return Signature(
        inputs={n.name: _spec_from_node(n) for n in session.get_inputs()},
        outputs={n.name: _spec_from_node(n) for n in session.get_outputs()},
    )


class OnnxServable:
    def __init__(self, path: Path, options: OnnxOptions) -> None:
        import onnxruntime as ort

        if hasattr(ort, "disable_telemetry_events"):
            ort.disable_telemetry_events()  # a server must not phone home
        has_metadata = (path / METADATA_FILE).exists()
        metadata = read_metadata(path) if has_metadata else None
        graph = path / (metadata.graph if metadata else ONNX_FILE)
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = options.inter_op_threads
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[options.graph_optimization]
        try:
            self._session = ort.InferenceSession(
                str(graph), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise FailedPrecondition(f"could not load ONNX graph {graph}: {exc}") from exc
        graph_sig = signature_from_session(self._session)
        if metadata is None:
            metadata = ModelMetadata(signatures={"serving_default": graph_sig})
        else:
            self._check_metadata(metadata, graph_sig)
        self.metadata = metadata
        # alias -> graph tensor name, per signature
        self._inputs = {k: {a: t.name for a, t in s.inputs.items()}
                        for k, s in metadata.signatures.items()}  # fmt: skip
        self._outputs = {k: {a: t.name for a, t in s.outputs.items()}
                         for k, s in metadata.signatures.items()}  # fmt: skip

    @staticmethod
    def _check_metadata(metadata: ModelMetadata, graph_sig: Signature) -> None:
        graph_in = {t.name for t in graph_sig.inputs.values()}
        graph_out = {t.name for t in graph_sig.outputs.values()}
        for sig_name, sig in metadata.signatures.items():
            for alias, spec in sig.inputs.items():
                if spec.name not in graph_in:
                    raise FailedPrecondition(
                        f"signature {sig_name!r} input {alias!r} names tensor {spec.name!r}, "
                        f"which the ONNX graph does not have (it has {sorted(graph_in)})")
            for alias, spec in sig.outputs.items():
                if spec.name not in graph_out:
                    raise FailedPrecondition(
                        f"signature {sig_name!r} output {alias!r} names tensor {spec.name!r}, "
                        f"which the ONNX graph does not have (it has {sorted(graph_out)})")

    def predict(
        self, inputs: Tensors, *, signature: str = "serving_default",
        output_filter: tuple[str, ...] = (),
    ) -> Tensors:
        in_names, out_names = self._inputs[signature], self._outputs[signature]
        aliases = list(output_filter) if output_filter else list(out_names)
        feed = {in_names[a]: v for a, v in inputs.items()}
        try:
            results = self._session.run([out_names[a] for a in aliases], feed)
        except Exception as exc:
            msg = str(exc)
            if "INVALID_ARGUMENT" in msg or "Invalid" in msg:
                raise InvalidArgument(f"the model rejected the input: {msg}") from exc
            raise Internal(f"inference failed: {msg}") from exc
        return {a: np.asarray(r) for a, r in zip(aliases, results, strict=True)}

    def close(self) -> None:
        # Dropping the session frees its memory; ONNX Runtime has no explicit close.
        self._session = None


class OnnxRuntime:
    platform = "onnx"

    def __init__(self, options: OnnxOptions | None = None) -> None:
        self.options = options or OnnxOptions()

    def can_load(self, path: Path) -> bool:
        """An ONNX graph is there, and corolla.json (if any) does not name another platform."""
        if (path / METADATA_FILE).exists():
            try:
                md = read_metadata(path)
            except Exception:
                return (path / ONNX_FILE).exists()
            return md.platform == "onnx" and (path / md.graph).exists()
        return (path / ONNX_FILE).exists()

    def load(self, path: Path) -> OnnxServable:
        return OnnxServable(path, self.options)
