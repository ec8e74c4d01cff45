"""Model warmup: run each newly loaded version once before it turns AVAILABLE.

A ``Manager.prepare`` hook, so it runs in the load thread, after the runtime has built its
session and before the version is published: the first real request then does not pay for
ONNX Runtime's lazy initialisation (memory arenas, kernel selection). For every signature it
feeds one batch-1 example: for a model that declares image preprocessing, a small synthetic
JPEG decoded and preprocessed exactly as a request's image would be (which also proves that
the preprocessing spec fits the graph); otherwise zeros of each input's dtype, unknown
dimensions set to 1. Signatures with string inputs are skipped. A failed warmup fails the load
(the manager retries it, and a failed version never displaces a working one), as in TF Serving.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from corolla.errors import CorollaError, Internal
from corolla.model_dir import ImagePreprocessing, Signature
from corolla.runtimes.base import Servable
from corolla.tensors import Tensors, numpy_dtype

if TYPE_CHECKING:
    from corolla.metrics import Metrics
    from corolla.repository.serving_map import LoadedVersion

log = logging.getLogger("corolla.warmup")


@dataclass(frozen=True, kw_only=True)
class WarmupOptions:
    enabled: bool = True
    iterations: int = 1
    platforms: tuple[str, ...] = ("onnx",)


def _zeros(shape: tuple[int, ...] | None, dtype: str) -> np.ndarray:
    dims = [1] if shape is None else [1 if d < 0 else d for d in shape]
    return np.zeros(dims, dtype=numpy_dtype(dtype))


def _sample_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (128, 96, 64)).save(buf, "JPEG")
    return buf.getvalue()


def warmup_inputs(sig: Signature, pre: ImagePreprocessing | None) -> Tensors | None:
    """One batch-1 example for ``sig``; None when it cannot be made (string inputs)."""
    inputs: Tensors = {}
    for alias, spec in sig.inputs.items():
        if pre is not None and alias == pre.input:
            from corolla.images import preprocess_image

            inputs[alias] = preprocess_image(_sample_jpeg(), pre)[np.newaxis]
        elif spec.dtype == "string":
            return None
        else:
            inputs[alias] = _zeros(spec.shape, spec.dtype)
    return inputs


def warm_up(servable: Servable, iterations: int = 1) -> int:
    """Run every signature of ``servable`` ``iterations`` times; the number of runs."""
    md = servable.metadata
    runs = 0
    for name, sig in md.signatures.items():
        pre = md.preprocessing if sig is md.signatures.get("serving_default") else None
        inputs = warmup_inputs(sig, pre)
        if inputs is None:
            log.info("warmup: signature %s has string inputs; skipped", name)
            continue
        for _ in range(max(1, iterations)):
            servable.predict(inputs, signature=name)
            runs += 1
    return runs


def warmup_hook(options: WarmupOptions, metrics: Metrics | None = None
                ) -> Callable[[LoadedVersion], None]:
    """A ``Manager.prepare`` hook. Its runs call the servable directly: they are not traffic
    (the runtime latency metrics time the version's runner only)."""

    def hook(loaded: LoadedVersion) -> None:
        if not options.enabled or loaded.platform not in options.platforms:
            return
        servable = loaded.servable
        start = time.perf_counter()
        status = "OK"
        try:
            runs = warm_up(servable, options.iterations)
        except CorollaError as exc:
            status = exc.code.name
            raise type(exc)(
                f"warmup of {loaded.name} version {loaded.version} failed: {exc.message}", exc.code
            ) from exc
        except Exception as exc:
            status = "INTERNAL"
            raise Internal(
                f"warmup of {loaded.name} version {loaded.version} failed: {exc!r}"
            ) from exc
        finally:
            seconds = time.perf_counter() - start
            if metrics is not None:
                metrics.warmup_latency.labels(str(loaded.path), status).observe(seconds * 1e6)
        log.info(
            "model %s version %d warmed up (%d run(s), %.3fs)",
            loaded.name,
            loaded.version,
            runs,
            seconds,
        )

    return hook
