"""The tuning cache: a restart reuses a model's batch-size measurements; a changed model file,
other ONNX Runtime threads or another machine are measured again."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from corolla import runner as runner_module
from corolla.autotune import TuneResult
from corolla.batching import BatchingOptions
from corolla.demo_model import build_onnx
from corolla.looprunner import LoopRunner
from corolla.runtimes.onnx import OnnxOptions, OnnxRuntime, OnnxServable
from corolla.tunecache import TuneCache, file_identity

RESULT = TuneResult(max_batch_size=4, cost_per_row_ms={1: 2.0, 2: 1.5, 4: 1.4},
                    wall_per_row_ms={1: 2.1, 2: 1.6, 4: 1.5})


def test_entries_round_trip_and_bad_entries_are_misses(tmp_path: Path) -> None:
    cache = TuneCache(tmp_path / "tuning")
    key = cache.key("onnx:model-a", 32)
    assert cache.get(key) is None
    cache.put(key, RESULT, describe="model-a")
    assert cache.get(key) == RESULT
    assert cache.key("onnx:model-a", 16) != key  # another tuning limit
    assert cache.key("onnx:model-b", 32) != key
    (tmp_path / "tuning" / f"{key}.json").write_text("{not json")
    assert cache.get(key) is None
    (tmp_path / "tuning" / f"{key}.json").write_text(json.dumps({"format": "other"}))
    assert cache.get(key) is None


def test_an_unwritable_cache_only_costs_a_measurement(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = TuneCache(blocker / "tuning")
    calls = []
    for _ in range(2):
        result, cached = cache.get_or_measure("onnx:x", 8, lambda: calls.append(1) or RESULT)
        assert result == RESULT and not cached
    assert len(calls) == 2


def test_file_identity_changes_when_the_file_is_rewritten(tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(b"one")
    first = file_identity(f)
    assert file_identity(f) == first
    f.write_bytes(b"two!")
    assert file_identity(f) != first
    copy = tmp_path / "copy.onnx"
    shutil.copy2(f, copy)
    assert file_identity(copy) != file_identity(f)


@pytest.fixture
def counted_tuning(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each real measurement the runner makes, by graph path."""
    calls: list[str] = []
    real = runner_module.tune_max_batch_size

    def counting(servable: OnnxServable, **kw: Any) -> TuneResult | None:
        calls.append(servable._graph.name)
        return real(servable, **kw)

    monkeypatch.setattr(runner_module, "tune_max_batch_size", counting)
    return calls


def _compose(version: Path, cache: TuneCache, options: OnnxOptions | None = None) -> object:
    servable = OnnxRuntime(options or OnnxOptions(intra_op_threads=1)).load(version)
    with ThreadPoolExecutor(1) as pool:
        r = runner_module.compose_runner(
            servable, version, batching=BatchingOptions(autotune=True), inline_requests=False,
            executor=pool, loop_runner=LoopRunner(), name="colors", version=1, tune_cache=cache)
    return r.plan.tune


def test_a_restart_reuses_the_measurements_until_the_model_file_changes(
    demo_base: Path, tmp_path: Path, counted_tuning: list[str]
) -> None:
    version = demo_base / "1"
    cache = TuneCache(tmp_path / "tuning")
    first = _compose(version, cache)
    assert first is not None and counted_tuning == ["model.onnx"]
    assert len(os.listdir(tmp_path / "tuning")) == 1
    assert _compose(version, cache) == first  # a restart: no new measurement
    assert counted_tuning == ["model.onnx"]
    # Other ONNX Runtime threads run the graph differently: measured again.
    _compose(version, cache, OnnxOptions(intra_op_threads=2))
    assert len(counted_tuning) == 2
    # A new model file at the same path (republished: written beside it, renamed over it).
    new = version / ".model.onnx.tmp"
    new.write_bytes(build_onnx(16))
    os.replace(new, version / "model.onnx")
    _compose(version, cache)
    assert len(counted_tuning) == 3
    _compose(version, cache)
    assert len(counted_tuning) == 3
