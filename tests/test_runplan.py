"""How a version runs (corolla.runplan): the pure planner, as tables."""

from __future__ import annotations

import pytest

from corolla.autotune import TuneResult
from corolla.batching import BatchingOptions
from corolla.runplan import (
    DEFAULT_RUN_ROWS,
    INLINE_MAX_ROWS,
    QUEUE_MIN_ROWS,
    Mode,
    RunPlan,
    plan_for,
    tune_limit,
    with_batch_size,
)

AUTO = BatchingOptions(autotune=True)  # Corolla's defaults: measured at load
FIXED = BatchingOptions(max_batch_size=8, autotune=False)  # a parameters file
OWN = BatchingOptions(max_batch_size=4, eager=False)  # a version's batching_params.pbtxt


def tuned(size: int, **ms_per_row: float) -> TuneResult:
    """A measurement that chose ``size``; ``ms_per_row`` as ``b1=..., b2=...``."""
    costs = {int(k[1:]): v for k, v in ms_per_row.items()}
    return TuneResult(max_batch_size=size, cost_per_row_ms=costs)


CHEAP_1 = tuned(1, b1=0.01, b2=0.01)  # cheaper than a hand-off, batching saves nothing
CHEAP_8 = tuned(8, b1=0.01, b2=0.006, b4=0.004, b8=0.003)  # cheap, and batching helps
MID_16 = tuned(16, b1=6.0, b2=4.0, b4=3.0, b8=2.5, b16=2.0)  # 8 rows: 20 ms; 16 rows: 32 ms
HEAVY_16 = tuned(16, b1=30.0, b2=20.0, b4=15.0, b8=12.0, b16=11.0)  # nothing fits the loop
FLAT_1 = tuned(1, b1=2.0, b2=2.0)  # batching saves nothing
HEAVY_1 = tuned(1, b1=30.0, b2=30.0)


def plan(mode: Mode, rows: int, **kw: object) -> RunPlan:
    return RunPlan(mode=mode, rows=rows, **kw)  # type: ignore[arg-type]


CASES = [
    # (id, batching, per_model, inline_requests, tuned, expected)
    ("off", None, None, False, None, plan(Mode.THREAD, DEFAULT_RUN_ROWS)),
    ("off, one core, cheap", None, None, True, FLAT_1,
     plan(Mode.LOOP, DEFAULT_RUN_ROWS, decode_on_loop=True, tune=FLAT_1)),
    ("off, one core, too slow for the loop", None, None, True, HEAVY_1,
     plan(Mode.THREAD, DEFAULT_RUN_ROWS, tune=HEAVY_1)),
    ("off, one core, cannot be timed", None, None, True, None,
     plan(Mode.THREAD, DEFAULT_RUN_ROWS)),
    ("off: a version's own file is not read", None, OWN, False, None,
     plan(Mode.THREAD, DEFAULT_RUN_ROWS)),
    ("version's own file", AUTO, OWN, True, None, plan(Mode.BATCH, 4, batching=OWN)),
    ("parameters file", FIXED, None, True, None, plan(Mode.BATCH, 8, batching=FIXED)),
    ("autotune, cannot be timed", AUTO, None, False, None, plan(Mode.BATCH, 32, batching=AUTO)),
    ("cheap, unbatched", AUTO, None, False, CHEAP_1,
     plan(Mode.THREAD, 1, inline_rows=INLINE_MAX_ROWS, queue_limit=QUEUE_MIN_ROWS,
          tune=CHEAP_1)),
    ("cheap, unbatched, one core", AUTO, None, True, CHEAP_1,
     plan(Mode.LOOP, 1, inline_rows=INLINE_MAX_ROWS, decode_on_loop=True,
          queue_limit=QUEUE_MIN_ROWS, tune=CHEAP_1)),
    ("cheap, batched", AUTO, None, False, CHEAP_8,
     plan(Mode.BATCH, 8, batching=with_batch_size(AUTO, 8), inline_rows=INLINE_MAX_ROWS,
          tune=CHEAP_8)),
    ("cheap, batched, one core", AUTO, None, True, CHEAP_8,
     plan(Mode.BATCH, 8, batching=with_batch_size(AUTO, 8), inline_rows=INLINE_MAX_ROWS,
          decode_on_loop=True, tune=CHEAP_8)),
    ("batched", AUTO, None, False, MID_16,
     plan(Mode.BATCH, 16, batching=with_batch_size(AUTO, 16), tune=MID_16)),
    ("batched, one core: batches on the loop, as big as 25 ms allows", AUTO, None, True, MID_16,
     plan(Mode.BATCH_ON_LOOP, 8, batching=with_batch_size(AUTO, 8), decode_on_loop=True,
          queue_limit=with_batch_size(AUTO, 8).max_enqueued_batches * 8, tune=MID_16)),
    ("batched, one core, no batch fits the loop", AUTO, None, True, HEAVY_16,
     plan(Mode.BATCH, 16, batching=with_batch_size(AUTO, 16), tune=HEAVY_16)),
    ("unbatched", AUTO, None, False, FLAT_1,
     plan(Mode.THREAD, 1, queue_limit=QUEUE_MIN_ROWS, tune=FLAT_1)),
    ("unbatched, one core", AUTO, None, True, FLAT_1,
     plan(Mode.LOOP, 1, decode_on_loop=True, queue_limit=QUEUE_MIN_ROWS, tune=FLAT_1)),
    ("unbatched, one core, too slow for the loop", AUTO, None, True, HEAVY_1,
     plan(Mode.THREAD, 1, queue_limit=QUEUE_MIN_ROWS, tune=HEAVY_1)),
]


@pytest.mark.parametrize(("batching", "per_model", "inline", "measured", "want"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_for(batching: BatchingOptions | None, per_model: BatchingOptions | None,
                  inline: bool, measured: TuneResult | None, want: RunPlan) -> None:
    got = plan_for(batching=batching, per_model=per_model, inline_requests=inline,
                   tuned=measured)
    assert got == want
    assert got.batched == (got.batching is not None)
    # Invariants: chunks are never bigger than a batch, and a bound exists wherever requests
    # queue outside a batcher after taking a place early.
    if got.batching is not None:
        assert got.rows == got.batching.max_batch_size
    if got.decode_on_loop and got.mode is Mode.BATCH_ON_LOOP:
        assert got.queue_limit > 0


@pytest.mark.parametrize(("batching", "per_model", "inline", "want"), [
    (None, False, False, None),  # nothing to decide
    (None, False, True, 1),  # only whether a request may run on the loop
    (AUTO, False, False, AUTO.max_batch_size),
    (AUTO, True, True, None),  # the version's own parameters are taken as given
    (FIXED, False, True, None),
])
def test_tune_limit(batching: BatchingOptions | None, per_model: bool, inline: bool,
                    want: int | None) -> None:
    assert tune_limit(batching=batching, per_model=per_model, inline_requests=inline) == want


def test_tuned_batch_sizes_keep_a_queue_of_at_least_queue_min_rows() -> None:
    for size in (1, 2, 3, 8, 32, 300):
        options = with_batch_size(AUTO, size)
        assert options.max_batch_size == size
        assert options.max_enqueued_batches * size >= QUEUE_MIN_ROWS
        assert options.max_enqueued_batches >= AUTO.max_enqueued_batches


def test_describe_names_the_mode() -> None:
    text = plan_for(batching=AUTO, inline_requests=True, tuned=MID_16).describe()
    assert text.startswith("batch_on_loop, up to 8 rows per run")
    assert "photos decoded on the loop" in text
