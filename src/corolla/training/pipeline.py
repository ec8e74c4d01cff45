"""``corolla train`` end to end: photos, split, recipe, export, verify, evaluate, publish.

Owns the order of the steps and what lands in the version directory besides the graph:
``corolla.json`` (with provenance: dataset fingerprint, split, recipe, metrics, timings),
``metrics.json`` / ``classification_report.txt`` / ``confusion_matrix.png`` (the exported graph
evaluated on the held-out test split through the server's runtime and preprocessing),
``training_curves.png``, ``history.json``, ``split.json`` and (unless ``--quantize none``)
``model.int8.onnx`` with its own reports and ``quantization.json``. Everything is written under
a hidden staging name and published atomically as the next version.

int8 by default. The version names both graphs as variants (``fp32``, ``int8``); the int8 one
is its default (served unless the server asks for ``fp32``) when its top-1 accuracy on the
validation split, through the server's runtime and preprocessing, is within
:data:`INT8_TOLERANCE_POINTS` of fp32's (``--quantize auto``, the default), or always
(``--quantize int8``). Without validation photos (``--refit``) the test split decides, and
``provenance.quantization`` says so, as it says every decision and its numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corolla.images import preprocess_image
from corolla.model_dir import ONNX_FILE, write_metadata
from corolla.model_publish import stage_version
from corolla.training.data import (
    SplitSpec,
    check_trainable,
    scan_dataset,
    split_dataset,
    split_record,
)
from corolla.training.evaluate import evaluate_version, predict_samples
from corolla.training.export import (
    VERIFY_ATOL,
    build_metadata,
    export_onnx,
    quantize_int8,
    verify_export,
)
from corolla.training.metrics import plot_curves
from corolla.training.models import ServingWrapper
from corolla.training.recipes import RecipeConfig, run_recipe

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
VARIANTS = {"fp32": ONNX_FILE, "int8": INT8_FILE}
# int8 is served by default when it loses at most this many points of top-1 accuracy.
INT8_TOLERANCE_POINTS = 0.5
QUANTIZE_MODES = ("auto", "int8", "none")


@dataclass(frozen=True, kw_only=True)
class TrainJob:
    data_dir: Path
    output: Path
    recipe: RecipeConfig
    split: SplitSpec
    workdir: Path
    resume: bool = False
    quantize: str = "auto"  # QUANTIZE_MODES (module docstring)
    verify_images: int = 32


def _real_inputs(samples: list[Any], spec: Any, n: int) -> np.ndarray:
    xs = []
    for s in samples:
        try:
            xs.append(preprocess_image(s.path.read_bytes(), spec))
        except Exception:  # undecodable files were reported by the recipe
            continue
        if len(xs) >= n:
            break
    return np.stack(xs).astype(np.float32)


def run(job: TrainJob) -> Path:
    """Train, export, evaluate and publish; return the published version directory."""
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, job.recipe.threads))
    ds = scan_dataset(job.data_dir)
    splits = split_dataset(ds.samples, job.split)
    check_trainable(ds, splits)
    log.info(
        "dataset %s: %s; split %s",
        job.data_dir,
        ds.counts(),
        {k: len(v) for k, v in splits.items()},
    )
    fit_splits = splits
    if job.recipe.refit:  # the validation photos join training; the test split stays held out
        fit_splits = {
            "train": splits["train"] + splits["validation"],
            "validation": [],
            "test": splits["test"],
        }
        log.info("refit: training on train + validation (%d photos)", len(fit_splits["train"]))
    trained = run_recipe(fit_splits, len(ds.classes), job.recipe, job.workdir, job.resume)
    t_train = time.perf_counter() - t0
    wrapper = ServingWrapper(trained.model).eval()
    with stage_version(job.output) as staged:
        vdir = staged.path
        export_onnx(wrapper, vdir / "model.onnx", trained.spec)
        verify = _real_inputs(splits["validation"], trained.spec, job.verify_images)
        diff = verify_export(wrapper, vdir / "model.onnx", verify)
        provenance: dict[str, Any] = {
            "trainer": "corolla train",
            "command": " ".join(sys.argv),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "architecture": job.recipe.arch,
            "recipe": trained.recipe,
            "dataset": {
                "path": str(job.data_dir),
                "fingerprint_sha256": ds.fingerprint,
                "classes": list(ds.classes),
                "counts": ds.counts(),
            },
            "split": split_record(ds, splits, job.split),
            "skipped_images": trained.skipped_images,
            "export": {
                "onnx_opset": 17,
                "verified_images": len(verify),
                "max_abs_diff_vs_pytorch": diff,
                "tolerance": VERIFY_ATOL,
            },
            "environment": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "device": job.recipe.fit.device,
                "threads": torch.get_num_threads(),
            },
        }
        metadata = build_metadata(ds.classes, trained.spec, provenance)
        write_metadata(vdir, metadata)
        test = evaluate_version(
            vdir,
            splits["test"],
            vdir,
            title=f"held-out test split of {ds.root.name}",
            progress=job.recipe.fit.progress,
            root=ds.root,
        )
        # No validation (refit): NaN in the records, null in the JSON.
        history = [
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(h).items()}
            for h in trained.history
        ]
        (vdir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
        if history:
            plot_curves(
                history, vdir / "training_curves.png", f"{job.recipe.arch} ({job.recipe.recipe})"
            )
        (vdir / "split.json").write_text(
            json.dumps(
                {
                    k: [{"path": str(s.path.relative_to(ds.root)), "sha256": s.sha256} for s in v]
                    for k, v in splits.items()
                },
                indent=1,
            )
            + "\n"
        )
        best = max(
            (h for h in history if h["val_acc"] is not None),
            key=lambda h: (h["val_acc"], -(h["val_loss"] or 0.0)),
            default=None,
        )
        provenance["metrics"] = {
            "test": _summary(test),
            "validation_best_epoch": best,
        }
        metadata = build_metadata(ds.classes, trained.spec, provenance)
        if job.quantize != "none":
            metadata = dataclasses.replace(metadata, graph_variants=dict(VARIANTS))
            write_metadata(vdir, metadata)  # the int8 variant can be evaluated by name
            provenance["metrics"]["test_int8"], decision = _quantize(
                job, vdir, splits, trained.spec, test, ds.root
            )
            provenance["quantization"] = decision
            metadata = dataclasses.replace(metadata, graph=VARIANTS[decision["served"]])
            log.info("serving %s by default: %s", decision["served"], decision["reason"])
        provenance["timings_s"] = {
            "train": round(t_train, 1),
            "total": round(time.perf_counter() - t0, 1),
        }
        metadata = dataclasses.replace(metadata, provenance=provenance)
        write_metadata(vdir, metadata)
    assert staged.published is not None
    log.info(
        "published %s (test accuracy %.4f) in %.0f s",
        staged.published,
        test["accuracy"],
        time.perf_counter() - t0,
    )
    return staged.published


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": m["accuracy"],
        "top_k_accuracy": m["top_k_accuracy"],
        "macro_f1": m["macro_avg"]["f1"],
        "num_examples": m["num_examples"],
        "inference_ms_per_image": round(m["inference_ms_per_image"], 3),
    }


def _quantize(
    job: TrainJob, vdir: Path, splits: dict[str, Any], spec: Any, fp32: dict[str, Any], root: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the int8 graph and its test-split reports; (its test summary, the decision)."""
    calib = _real_inputs(splits["train"][:: max(1, len(splits["train"]) // 128)], spec, 128)
    quantize_int8(vdir / "model.onnx", vdir / INT8_FILE, calib, spec.input)
    int8 = evaluate_version(
        vdir,
        splits["test"],
        vdir,
        title="held-out test split, int8 graph",
        prefix="int8_",
        root=root,
        progress=job.recipe.fit.progress,
        variant="int8",
    )
    decision = choose_variant(job.quantize, vdir, splits, job.recipe.fit.progress)
    report = {
        "fp32": _summary(fp32),
        "int8": _summary(int8),
        "default_variant": decision,
        "size_bytes": {
            "fp32": (vdir / "model.onnx").stat().st_size,
            "int8": (vdir / INT8_FILE).stat().st_size,
        },
        "method": "onnxruntime.quantization.quantize_static, QDQ, per-channel int8 weights, "
        "uint8 activations calibrated (MinMax) on 128 training images",
    }
    (vdir / "quantization.json").write_text(json.dumps(report, indent=2) + "\n")
    return _summary(int8), decision


def _accuracy(vdir: Path, samples: list[Any], variant: str, progress: bool) -> float | None:
    scores, kept, _failures, _s = predict_samples(vdir, samples, progress=progress,
                                                  variant=variant)
    if not len(kept):
        return None
    labels = np.asarray([samples[i].label for i in kept])
    return float((scores.argmax(1) == labels).mean())


def choose_variant(
    mode: str, vdir: Path, splits: dict[str, Any], progress: bool = False
) -> dict[str, Any]:
    """Which graph the version serves by default under ``--quantize`` ``mode``, and why
    (``provenance.quantization``); ``vdir``'s metadata names both variants."""
    split = "validation" if splits["validation"] else "test"
    acc = {v: _accuracy(vdir, splits[split], v, progress) for v in VARIANTS}
    served, reason = decide_variant(mode, split, acc["fp32"], acc["int8"])
    return {
        "mode": mode,
        "decided_on": split,
        "accuracy": acc,
        "tolerance_points": INT8_TOLERANCE_POINTS,
        "served": served,
        "reason": reason,
    }


def decide_variant(
    mode: str, split: str, fp32: float | None, int8: float | None
) -> tuple[str, str]:
    """(the default variant, why) from each graph's top-1 accuracy on ``split``."""
    if fp32 is None or int8 is None:
        on = f"no {split} photos to compare the graphs on"
    else:
        on = f"{split} accuracy int8 {int8:.2%} against fp32 {fp32:.2%}"
    if mode == "int8":
        served, reason = "int8", f"--quantize int8 ({on})"
    elif fp32 is None or int8 is None:
        served, reason = "fp32", on
    elif (loss := 100 * (fp32 - int8)) <= INT8_TOLERANCE_POINTS + 1e-9:
        served, reason = "int8", f"{on}, within {INT8_TOLERANCE_POINTS} points"
    else:
        served = "fp32"
        reason = (f"int8 loses {loss:.2f} points of {split} accuracy ({on}), more than "
                  f"{INT8_TOLERANCE_POINTS}; the int8 graph stays in the version as "
                  "variant int8 (corolla serve --onnx_graph_variant=int8)")
    if split == "test":
        reason += " (no validation photos: decided on the test split)"
    return served, reason
