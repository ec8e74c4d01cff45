"""A fake runtime for tests: real loading, state and timing behaviour, trivial arithmetic.

A version directory for it holds ``fake.json``::

    {"load_seconds": 0.0, "fail": null, "predict_seconds": 0.0, "offset": 0.0,
     "input_shape": [-1, 4], "labels": [], "cpu_ms_per_row": 0.0, "cpu_ms_per_call": 0.0}

``predict`` returns ``outputs = inputs["x"] * 2 + offset`` (so tests can tell versions apart by
their offset) and, with labels, ``scores`` = a softmax over the first len(labels) columns.
``fail`` makes ``load`` raise with that message. Sleeps model slow loads and slow inference in
worker threads; they never run on the event loop. ``cpu_ms_per_row`` spends that much of the
calling thread's CPU per input row (a model that batching does not make cheaper);
``cpu_ms_per_call`` that much per call whatever its rows (one that batching does).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from corolla.errors import FailedPrecondition
from corolla.model_dir import ModelMetadata, Signature, TensorSpec
from corolla.tensors import Tensors

FAKE_FILE = "fake.json"


class FakeServable:
    def __init__(self, path: Path, spec: dict[str, Any]) -> None:
        self.path = path
        self.offset = float(spec.get("offset", 0.0))
        self.predict_seconds = float(spec.get("predict_seconds", 0.0))
        self.cpu_ms_per_row = float(spec.get("cpu_ms_per_row", 0.0))
        self.cpu_ms_per_call = float(spec.get("cpu_ms_per_call", 0.0))
        shape = tuple(int(d) for d in spec.get("input_shape", [-1, 4]))
        labels = tuple(str(x) for x in spec.get("labels", ()))
        outputs = {"outputs": TensorSpec(name="outputs", dtype="float32", shape=shape)}
        if labels:
            outputs["scores"] = TensorSpec(name="scores", dtype="float32",
                                           shape=(-1, len(labels)))
        self.metadata = ModelMetadata(
            platform="fake",
            signatures={"serving_default": Signature(
                inputs={"x": TensorSpec(name="x", dtype="float32", shape=shape)},
                outputs=outputs)},
            labels=labels,
            scores_output="scores" if labels else None,
        )
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.closed = False
        self._lock = threading.Lock()

    def predict(
        self, inputs: Tensors, *, signature: str = "serving_default",
        output_filter: tuple[str, ...] = (),
    ) -> Tensors:
        x = np.asarray(inputs["x"], dtype=np.float32)
        with self._lock:
            self.calls += 1
            self.batch_sizes.append(int(x.shape[0]) if x.ndim else 1)
        if self.predict_seconds:
            time.sleep(self.predict_seconds)
        if self.cpu_ms_per_row or self.cpu_ms_per_call:
            rows = x.shape[0] if x.ndim else 1
            end = time.thread_time() + (self.cpu_ms_per_call + self.cpu_ms_per_row * rows) / 1e3
            while time.thread_time() < end:
                pass
        out: Tensors = {"outputs": x * 2 + self.offset}
        if self.metadata.labels:
            n = len(self.metadata.labels)
            logits = x.reshape(x.shape[0], -1)[:, :n]
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            out["scores"] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        if output_filter:
            out = {k: v for k, v in out.items() if k in output_filter}
        return out

    def close(self) -> None:
        self.closed = True


class FakeRuntime:
    platform = "fake"

    def can_load(self, path: Path) -> bool:
        return (path / FAKE_FILE).exists()

    def load(self, path: Path) -> FakeServable:
        try:
            spec = json.loads((path / FAKE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(f"cannot read {path / FAKE_FILE}: {exc}") from exc
        if spec.get("load_seconds"):
            time.sleep(float(spec["load_seconds"]))
        if spec.get("fail"):
            raise FailedPrecondition(str(spec["fail"]))
        return FakeServable(path, spec)


def write_fake_version(base_path: Path, version: int, **spec: Any) -> Path:
    """Test helper: create ``base_path/version/fake.json``."""
    d = base_path / str(version)
    d.mkdir(parents=True, exist_ok=True)
    (d / FAKE_FILE).write_text(json.dumps(spec))
    return d
