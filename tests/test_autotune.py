"""corolla.autotune: the batch size chosen from measured CPU cost per row."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from corolla.autotune import tune_max_batch_size
from corolla.model_dir import ModelMetadata, Signature, TensorSpec


class BurnServable:
    """Spends ``cost(batch) * batch`` ms of this thread's CPU per call."""

    def __init__(self, cost_ms: dict[int, float], shape: tuple[int, ...] = (-1, 4)) -> None:
        self.cost_ms = cost_ms
        self.sizes: list[int] = []
        self.metadata = ModelMetadata(signatures={"serving_default": Signature(
            inputs={"x": TensorSpec(name="x", dtype="float32", shape=shape)},
            outputs={"y": TensorSpec(name="y", dtype="float32", shape=shape)})})

    def predict(self, inputs: dict[str, np.ndarray], **_: Any) -> dict[str, np.ndarray]:
        n = inputs["x"].shape[0]
        self.sizes.append(n)
        end = time.thread_time() + self.cost_ms[n] * n / 1e3
        while time.thread_time() < end:
            pass
        return {"y": inputs["x"]}

    def close(self) -> None:
        pass


def test_a_model_cheapest_at_batch_one_gets_batch_one() -> None:
    s = BurnServable({1: 2.0, 2: 2.6, 4: 3.0, 8: 3.5})
    result = tune_max_batch_size(s, limit=8)
    assert result is not None and result.max_batch_size == 1
    assert max(s.sizes) == 2  # stopped growing as soon as a size was clearly worse


def test_a_model_that_amortises_gets_the_limit() -> None:
    s = BurnServable({1: 2.0, 2: 1.0, 4: 0.6, 8: 0.4, 16: 0.3})
    result = tune_max_batch_size(s, limit=16)
    assert result is not None and result.max_batch_size == 16


def test_the_largest_size_within_tolerance_of_the_cheapest_wins() -> None:
    s = BurnServable({1: 2.0, 2: 1.0, 4: 1.02, 8: 1.5, 16: 1.5})
    result = tune_max_batch_size(s, limit=16, tolerance=0.05)
    assert result is not None and result.max_batch_size == 4


def test_unknown_sizes_cannot_be_timed() -> None:
    s = BurnServable({1: 1.0}, shape=(-1, -1))
    assert tune_max_batch_size(s, limit=8) is None
    assert s.sizes == []


def test_a_small_saving_is_not_worth_batching() -> None:
    # 4% cheaper per row at batch 2 on one idle thread: not worth forming batches in service.
    s = BurnServable({1: 2.0, 2: 1.92, 4: 2.3, 8: 2.5})
    result = tune_max_batch_size(s, limit=8)
    assert result is not None and result.max_batch_size == 1
    assert result.cost_per_row_ms[2] < result.cost_per_row_ms[1]


def test_blocking_time_is_cpu_time_unless_the_model_waits() -> None:
    from corolla.autotune import WAIT_RATIO, TuneResult

    # Contention: the same 13 ms of CPU took 29 ms of wall time while the machine was busy.
    busy = TuneResult(max_batch_size=4, cost_per_row_ms={1: 13.0, 4: 12.0},
                      wall_per_row_ms={1: 29.0, 4: 30.0})
    assert busy.blocking_ms(1) == 13.0 and busy.blocking_ms(4) == 48.0
    # A model that waits (its own thread pool, a device): the wall time is what holds the loop.
    waits = TuneResult(max_batch_size=1, cost_per_row_ms={1: 0.5},
                       wall_per_row_ms={1: 0.5 * WAIT_RATIO + 1})
    assert waits.blocking_ms(1) == 0.5 * WAIT_RATIO + 1
    assert busy.blocking_ms(2) is None
