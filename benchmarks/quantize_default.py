"""Quantise the embedded default model to int8 and compare it with fp32 on its test split.

    .venv/bin/python benchmarks/quantize_default.py [DATA_DIR] [OUT_DIR]

Does what ``corolla train --quantize int8`` does at the end of a run, on the committed version
(no retraining): static QDQ int8 calibrated on 128 training photos, then both graphs evaluated
through the server's runtime and preprocessing; also times single-image latency of each.
Writes OUT_DIR/quantization.json and the int8 reports.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from corolla.model_dir import read_metadata
from corolla.training.data import SplitSpec, scan_dataset, split_dataset
from corolla.training.evaluate import evaluate_version
from corolla.training.export import ort_session, quantize_int8
from corolla.training.pipeline import INT8_FILE, _real_inputs, _summary

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src/corolla/default_model/flowers/1"


def latency_ms(path: Path, x: np.ndarray, runs: int = 100) -> float:
    sess = ort_session(path, threads=1)
    for _ in range(10):
        sess.run(None, {"images": x})
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, {"images": x})
    return 1000 * (time.perf_counter() - t0) / runs


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared/datasets/flower_photos")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / "runs/quantize-default")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(SRC, out)
    md = read_metadata(out)
    rule = md.provenance["split"]
    fr = rule["fractions"]
    ds = scan_dataset(data, classes=md.labels)
    splits = split_dataset(
        ds.samples,
        SplitSpec(fractions=(fr["train"], fr["validation"], fr["test"]), seed=rule["seed"]),
    )
    spec = md.preprocessing
    calib = _real_inputs(splits["train"][:: max(1, len(splits["train"]) // 128)], spec, 128)
    quantize_int8(out / "model.onnx", out / INT8_FILE, calib)
    fp32 = evaluate_version(out, splits["test"], out, prefix="fp32_", root=ds.root)
    int8 = evaluate_version(
        out,
        splits["test"],
        out,
        prefix="int8_",
        root=ds.root,
        graph=INT8_FILE,
        title="held-out test split, int8 graph",
    )
    one = calib[:1]
    report = {
        "fp32": {
            **_summary(fp32),
            "latency_ms_batch1_1thread": latency_ms(out / "model.onnx", one),
        },
        "int8": {**_summary(int8), "latency_ms_batch1_1thread": latency_ms(out / INT8_FILE, one)},
        "size_bytes": {
            "fp32": (out / "model.onnx").stat().st_size,
            "int8": (out / INT8_FILE).stat().st_size,
        },
    }
    (out / "quantization.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
