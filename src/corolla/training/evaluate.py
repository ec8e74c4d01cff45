"""Evaluate an exported model version exactly as the server runs it.

Owns ``corolla evaluate``'s work: read the version's ``corolla.json``, load it with the server's
ONNX runtime (:mod:`corolla.runtimes.onnx`), turn every photo into a tensor with the server's
:func:`corolla.images.preprocess_image`, and write the classification report, metrics JSON and
confusion-matrix PNG. No torch: this runs on a serving install too. Images that fail to decode
are reported and skipped. Preprocessing runs in a thread pool (decoders release the GIL).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from corolla.errors import CorollaError
from corolla.images import preprocess_image
from corolla.model_dir import AUTO_VARIANT, ModelMetadata, read_metadata
from corolla.training.data import Sample
from corolla.training.metrics import classification_metrics, format_report, plot_confusion_matrix

log = logging.getLogger(__name__)


def _prep(sample: Sample, md: ModelMetadata) -> np.ndarray | str:
    assert md.preprocessing is not None
    try:
        return preprocess_image(sample.path.read_bytes(), md.preprocessing)
    except (CorollaError, OSError) as exc:
        return f"{sample.path}: {exc}"


def predict_samples(
    version_dir: Path,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    threads: int = 2,
    progress: bool = True,
    variant: str = AUTO_VARIANT,
) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """(scores [n, classes], kept sample indices, decode failures, seconds of inference), from
    the version's graph ``variant`` (``auto``: its default graph)."""
    from tqdm import tqdm

    from corolla.runtimes.onnx import OnnxOptions, OnnxServable

    md = read_metadata(version_dir)
    if md.preprocessing is None or md.scores_output is None:
        raise ValueError(f"{version_dir}: not an image classifier (no preprocessing/scores)")
    servable = OnnxServable(version_dir, OnnxOptions(graph_variant=variant))
    scores, kept, failures, infer_s = [], [], [], 0.0
    with (
        ThreadPoolExecutor(threads) as pool,
        tqdm(total=len(samples), desc="evaluate", unit="img", disable=not progress) as bar,
    ):
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            xs, idx = [], []
            for j, r in enumerate(pool.map(lambda s: _prep(s, md), chunk)):
                if isinstance(r, str):
                    log.warning("skipped an image that failed to decode: %s", r)
                    failures.append(r)
                else:
                    xs.append(r)
                    idx.append(start + j)
            if xs:
                t0 = time.perf_counter()
                out = servable.predict({md.preprocessing.input: np.stack(xs)})
                infer_s += time.perf_counter() - t0
                scores.append(out[md.scores_output])
                kept += idx
            bar.update(len(chunk))
    servable.close()
    n = len(md.labels)
    return (
        np.concatenate(scores) if scores else np.zeros((0, n), np.float32),
        np.asarray(kept, np.int64),
        failures,
        infer_s,
    )


def _rel(path: Path, root: Path | None) -> str:
    return (
        str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)
    )


def evaluate_version(
    version_dir: Path,
    samples: Sequence[Sample],
    out_dir: Path,
    *,
    title: str = "test split",
    progress: bool = True,
    prefix: str = "",
    variant: str = AUTO_VARIANT,
    root: Path | None = None,
) -> dict[str, Any]:
    """Write ``{prefix}metrics.json``, ``{prefix}classification_report.txt`` and
    ``{prefix}confusion_matrix.png`` to ``out_dir``; return the metrics."""
    md = read_metadata(version_dir)
    scores, kept, failures, infer_s = predict_samples(
        version_dir, samples, progress=progress, variant=variant
    )
    y_true = np.asarray([samples[i].label for i in kept], np.int64)
    metrics = classification_metrics(y_true, scores, md.labels)
    metrics["skipped_images"] = failures
    metrics["inference_ms_per_image"] = 1000 * infer_s / max(len(kept), 1)
    metrics["evaluated_with"] = "corolla.runtimes.onnx + corolla.images.preprocess_image"
    metrics["graph"] = md.graph_file(variant)
    metrics["errors"] = [
        {"path": _rel(samples[i].path, root), "true": md.labels[t], "predicted": md.labels[p]}
        for i, t, p in zip(kept, y_true, scores.argmax(1), strict=True)
        if t != p
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{prefix}metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / f"{prefix}classification_report.txt").write_text(
        f"{title}\n\n{format_report(metrics)}"
    )
    plot_confusion_matrix(
        np.asarray(metrics["confusion_matrix"]),
        md.labels,
        out_dir / f"{prefix}confusion_matrix.png",
        f"{title} (accuracy {metrics['accuracy']:.2%})",
    )
    return metrics
