"""Choose a model's largest useful batch size by measuring it at load time.

On CPUs a bigger batch is not always cheaper per row: measured here with ONNX Runtime on one
thread, EfficientNet-Lite0 costs 5.2 ms per photo at batch 1 but 7.3 ms at batch 32, while a tiny
MLP gets cheaper with every doubling. So with default batching parameters, each new version is
timed at batch 1, 2, 4, ... (thread CPU time, which other load on the machine barely disturbs)
and the batcher's ``max_batch_size`` becomes the largest size whose cost per row stays within
``tolerance`` of the best seen, provided batching saves at least ``min_saving`` per row over
batch 1 at all; otherwise it is 1 (each request runs alone, as soon as a thread is free).
Growth stops early once a size is clearly worse, so a heavy model is timed on a handful of rows
only. Runs in the loader thread, before AVAILABLE.

Why a minimum saving: a batch measured on one idle thread as a few percent cheaper per row is
not cheaper in service. Measured with the flowers EfficientNet-Lite0 at concurrency 32 on 2
cores (benchmarks/results/2026-11-27-full-3.md): batches of up to 2 (within 5% of batch 1 on one
thread) served 10-15% fewer photos/s than no batching, spending ~1 CPU ms more per photo
(two threads' larger activations competing for the caches, plus merge and split).

Why 10%, not more: the tutorial CNN measures 13-23% cheaper per row at its best batch on one
idle thread (two processes tuning at once on 2 cores, 2026-11-27), and in service batches save
it ~0.4 of ~2.8 CPU ms per photo (its dense layer's 16 MB of weights read once per batch:
benchmarks/results/2026-11-27-cnn-loop-batches.md, and benchmarks/floor_server.py with and
without batches); the flowers model measures -2% to +5%. At 15% the CNN was batched in one
process and not in the other of the same server.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from corolla.model_dir import Signature
from corolla.runtimes.base import Servable
from corolla.tensors import numpy_dtype

log = logging.getLogger("corolla.autotune")

# Wall time over CPU time of a timed call beyond which the model is taken to wait rather than
# compute (TuneResult.blocking_ms); below it, the difference is contention from other load.
WAIT_RATIO = 3.0


@dataclass(frozen=True, kw_only=True)
class TuneResult:
    max_batch_size: int
    cost_per_row_ms: dict[int, float]  # CPU time of the calling thread
    # Wall time: a model that waits (on a device, a lock, a sleep) costs little CPU but holds
    # its caller; whether to run it on the event loop is decided on the larger of the two.
    wall_per_row_ms: dict[int, float] = field(default_factory=dict)

    def blocking_ms(self, size: int = 1) -> float | None:
        """How long one call of ``size`` rows holds its thread (None: not measured).

        Its CPU time, unless the wall time is more than WAIT_RATIO times that: a model that
        waits (on its own thread pool, a device, a lock). Wall time up to that ratio is other
        load on the machine stretching the same work (a version loaded while the server is
        busy measured 28.9 ms a call in one process and 13.0 in the other, then ran on the
        event loop in one and in threads in the other), which must not decide how it runs.
        """
        cpu = self.cost_per_row_ms.get(size)
        if cpu is None:
            return None
        wall = self.wall_per_row_ms.get(size, 0.0)
        return (wall if wall > WAIT_RATIO * cpu else cpu) * size


def _example_inputs(sig: Signature, rows: int, rng: np.random.Generator
                    ) -> dict[str, np.ndarray] | None:
    out = {}
    for alias, spec in sig.inputs.items():
        if spec.shape is None or not spec.shape or spec.dtype == "string":
            return None
        if spec.shape[0] not in (-1, rows) or any(d < 0 for d in spec.shape[1:]):
            return None  # no batch dimension, or other unknown sizes: cannot time it
        shape = (rows, *spec.shape[1:])
        dtype = numpy_dtype(spec.dtype)
        if dtype.kind == "f":
            out[alias] = rng.standard_normal(shape).astype(dtype)
        else:
            out[alias] = np.zeros(shape, dtype)
    return out


def tune_max_batch_size(servable: Servable, *, limit: int, tolerance: float = 0.05,
                        stop_above: float = 0.10, min_saving: float = 0.10, repeats: int = 3,
                        budget_seconds: float = 3.0) -> TuneResult | None:
    """The largest batch size (a power of two up to ``limit``) worth forming, or None when the
    signature cannot be timed (unknown sizes, string inputs)."""
    sig = servable.metadata.signatures.get("serving_default")
    if sig is None:
        return None
    rng = np.random.default_rng(0)
    costs: dict[int, float] = {}
    walls: dict[int, float] = {}
    deadline = time.monotonic() + budget_seconds
    size = 1
    while size <= limit:
        inputs = _example_inputs(sig, size, rng)
        if inputs is None:
            return None
        servable.predict(inputs)  # first run of a shape: allocations, not steady state
        best = best_wall = float("inf")
        for _ in range(repeats):
            start, wall = time.thread_time(), time.perf_counter()
            servable.predict(inputs)
            best = min(best, time.thread_time() - start)
            best_wall = min(best_wall, time.perf_counter() - wall)
        costs[size] = best / size * 1e3
        walls[size] = best_wall / size * 1e3
        cheapest = min(costs.values())
        if costs[size] > cheapest * (1 + stop_above) or time.monotonic() > deadline:
            break
        size *= 2
    cheapest = min(costs.values())
    if cheapest > costs[1] * (1 - min_saving):
        return TuneResult(max_batch_size=1, cost_per_row_ms=costs, wall_per_row_ms=walls)
    chosen = max(s for s, c in costs.items() if c <= cheapest * (1 + tolerance))
    return TuneResult(max_batch_size=chosen, cost_per_row_ms=costs, wall_per_row_ms=walls)
