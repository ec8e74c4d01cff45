"""How a loaded version runs its requests: decided once, at load, by a pure function.

TF Serving composes a session with its batching at load time (a BatchingSession has the same
``Run()`` as the session it wraps); the request path then makes one call. Corolla does the same
in two steps:

1. :func:`plan_for` (this module, pure: no clocks, threads or I/O) turns the batching options,
   a version's own ``batching_params.pbtxt`` (if any), whether this process runs requests on
   its event loop (``inline_requests``, one core per process) and what the load-time
   measurement found (:class:`corolla.autotune.TuneResult`) into a frozen :class:`RunPlan`.
   :func:`tune_limit` says beforehand what to measure. Both are tested as tables.
2. :class:`corolla.runner.VersionRunner` composes the plan with the version's servable, the
   inference threads and the loop runner into the one object that runs requests.

The modes (:class:`Mode`):

- ``BATCH``: dynamic batching, batches run in the inference threads.
- ``BATCH_ON_LOOP``: dynamic batching where a process has one core: photos are decoded and
  batches run on the event loop (corolla.looprunner), batches no bigger than what holds the
  loop ``INLINE_WHOLE_MAX_MS``.
- ``THREAD``: each request runs alone in the inference threads (batching off, or batching does
  not save CPU for this model), with a bounded queue when tuned so.
- ``LOOP``: each request runs alone on the event loop (one core per process, cheap model).

On top of any mode, a model cheaper than a hand-off to a thread (``inline_rows``) runs small
requests directly on the loop, and requests with more rows than ``rows`` run as several model
runs of at most ``rows`` rows (a model's working memory grows with the rows of a run).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from corolla.autotune import TuneResult
from corolla.batching import BatchingOptions

# A model whose inference at batch 1 costs at most this much CPU (measured at load, with the
# default batching parameters) runs inline on the event loop for requests of up to
# INLINE_MAX_ROWS rows: the hand-off to an inference thread and the batcher would cost the loop
# more than the model itself (benchmarks/PROFILE.md, tiny model).
INLINE_MAX_MS = 0.05
INLINE_MAX_ROWS = 64
# A process that has one core (the cores divided by ``--rest_workers`` is 1, or one CPU)
# gains nothing from decoding and inferring in threads: there is no other core for them, and
# every hand-off costs the loop and the GIL. There an unbatched model whose inference at batch 1
# costs at most this much runs each whole request (image decoding included) on the event loop,
# one request after another (corolla.looprunner), and a batched model whose batch costs at most
# this much decodes its photos there and runs its batches there (the batch size lowered to fit;
# Batcher's ``runner``). Measured with two processes on 2 cores, raw uploads at concurrency 32,
# against the same processes with threads: flowers (unbatched) +1.7%, within the noise
# (benchmarks/results/2026-11-27-inline-flowers.md); the tutorial CNN in batches on the loop
# +26% photos/s, 2.55 instead of 3.17 CPU ms per photo (2026-11-27-cnn-loop-batches.md). The
# bound keeps the loop's pauses short: a request (or a health probe) waits behind at most the
# requests already in the process.
INLINE_WHOLE_MAX_MS = 25.0
# With tuned (small) batch sizes the queue still holds at least this many rows before it sheds
# load: 64 batches of 1 photo would refuse requests at concurrency 64.
QUEUE_MIN_ROWS = 256
# Rows per model run of a version that batching does not size (batching off).
DEFAULT_RUN_ROWS = BatchingOptions().max_batch_size


class Mode(enum.Enum):
    BATCH = "batch"
    BATCH_ON_LOOP = "batch_on_loop"
    THREAD = "thread"
    LOOP = "loop"


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """How one loaded version runs requests (see the module docstring)."""

    mode: Mode
    # At most this many rows per model run; a request with more runs in chunks.
    rows: int
    # The batcher's options (batch size, queue, timeout) in the batched modes, else None.
    batching: BatchingOptions | None = None
    # Requests of at most this many rows run directly on the event loop (0: never).
    inline_rows: int = 0
    # Encoded photos are decoded on the event loop (small ones), not in the decode threads.
    decode_on_loop: bool = False
    # Requests waiting or running at once, for plans whose queue is not a batcher's (0: no
    # bound). With ``decode_on_loop`` a request takes its place before its photos are decoded.
    queue_limit: int = 0
    # What the load-time measurement found, when it ran.
    tune: TuneResult | None = None

    @property
    def batched(self) -> bool:
        return self.mode in (Mode.BATCH, Mode.BATCH_ON_LOOP)

    def describe(self) -> str:
        """One line for the log."""
        parts = [f"{self.mode.value}, up to {self.rows} rows per run"]
        if self.batching is not None:
            parts.append(f"max_batch_size {self.batching.max_batch_size}")
        if self.inline_rows:
            parts.append(f"requests of up to {self.inline_rows} rows inline on the loop")
        if self.decode_on_loop:
            parts.append("photos decoded on the loop")
        if self.queue_limit:
            parts.append(f"queue of {self.queue_limit}")
        return "; ".join(parts)


def with_batch_size(options: BatchingOptions, size: int) -> BatchingOptions:
    """``options`` with batches of ``size`` rows and a queue of at least QUEUE_MIN_ROWS rows."""
    return replace(options, max_batch_size=size, max_enqueued_batches=max(
        options.max_enqueued_batches, -(-QUEUE_MIN_ROWS // size)))


def tune_limit(*, batching: BatchingOptions | None, per_model: bool, inline_requests: bool
               ) -> int | None:
    """The largest batch size to measure at load (None: measure nothing).

    ``per_model``: the version has its own batching parameters file, which is taken as given.
    """
    if batching is None:
        return 1 if inline_requests else None  # only whether a request may run on the loop
    if per_model or not batching.autotune:
        return None
    return batching.max_batch_size


def _loop_batch_size(tuned: TuneResult, size: int) -> int:
    """The largest measured batch size up to ``size`` whose run holds the loop at most
    INLINE_WHOLE_MAX_MS, or 0 when below 2 (batches would then run in threads)."""
    fits = [s for s in tuned.cost_per_row_ms
            if s <= size and (ms := tuned.blocking_ms(s)) is not None
            and ms <= INLINE_WHOLE_MAX_MS]
    best = max(fits, default=0)
    return best if best >= 2 else 0


def _whole_on_loop(tuned: TuneResult | None, inline_requests: bool) -> bool:
    """Whether a version's whole requests (decoding and inference) may run on the loop."""
    if not inline_requests or tuned is None:
        return False
    cost = tuned.blocking_ms(1)
    return cost is not None and cost <= INLINE_WHOLE_MAX_MS


def plan_for(*, batching: BatchingOptions | None, per_model: BatchingOptions | None = None,
             inline_requests: bool = False, tuned: TuneResult | None = None) -> RunPlan:
    """The run plan of a version (pure).

    ``batching``: the server's batching options (None: batching off, and then ``per_model`` is
    not consulted). ``per_model``: the version's own ``batching_params.pbtxt``, parsed.
    ``inline_requests``: this process has one core (or was told to run requests on its loop).
    ``tuned``: the load-time measurement up to :func:`tune_limit` (None: not measured, or the
    signature cannot be timed).
    """
    if batching is None:
        whole = _whole_on_loop(tuned, inline_requests)
        return RunPlan(mode=Mode.LOOP if whole else Mode.THREAD, rows=DEFAULT_RUN_ROWS,
                       decode_on_loop=whole, tune=tuned)
    if per_model is not None:
        return RunPlan(mode=Mode.BATCH, rows=per_model.max_batch_size, batching=per_model)
    if not batching.autotune or tuned is None:
        return RunPlan(mode=Mode.BATCH, rows=batching.max_batch_size, batching=batching,
                       tune=tuned)
    size = tuned.max_batch_size
    options = with_batch_size(batching, size)
    call_ms = tuned.blocking_ms(1)
    # Cheaper than the hand-off to a thread: small requests run directly on the loop.
    inline_rows = INLINE_MAX_ROWS if call_ms is not None and call_ms <= INLINE_MAX_MS else 0
    whole = _whole_on_loop(tuned, inline_requests)
    if size == 1:
        # Batches of one would only add the batcher's hand-offs (measured: 5-10% fewer
        # photos/s). Requests run as they come, with the same bounded queue (429 when full)
        # and deadlines.
        return RunPlan(mode=Mode.LOOP if whole else Mode.THREAD, rows=1,
                       inline_rows=inline_rows, decode_on_loop=whole,
                       queue_limit=options.max_enqueued_batches, tune=tuned)
    loop_size = _loop_batch_size(tuned, size) if inline_requests and not inline_rows else 0
    if loop_size:
        # Photos wait to be decoded on the loop before their request reaches the batcher's
        # queue bound: requests take a place before that, as many as the batcher's queue
        # holds, so overload answers 429 at once.
        options = with_batch_size(options, loop_size)
        return RunPlan(mode=Mode.BATCH_ON_LOOP, rows=loop_size, batching=options,
                       decode_on_loop=True,
                       queue_limit=options.max_enqueued_batches * loop_size, tune=tuned)
    # A model cheap enough to run inline still decodes its photos on the loop when the process
    # has one core; its batches of bigger requests run in threads.
    return RunPlan(mode=Mode.BATCH, rows=size, batching=options, inline_rows=inline_rows,
                   decode_on_loop=whole and bool(inline_rows), tune=tuned)
