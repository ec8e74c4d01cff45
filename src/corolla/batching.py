"""Dynamic batching with TensorFlow Serving's parameters and semantics.

One :class:`Batcher` per loaded version. Requests arrive already decoded and validated (one bad
request never reaches a batch), each with tensors whose first dimension is its own row count.
Requests that can share a batch (same signature, output filter and per-row shapes) gather in an
open batch, which closes when it is full (``max_batch_size`` rows), when its oldest request has
waited ``batch_timeout_micros`` since it was enqueued, or (``eager`` dispatch, the default) as
soon as a batch thread is idle. Closed batches wait in a queue of at most
``max_enqueued_batches``; past that a request is refused at once with RESOURCE_EXHAUSTED
(load shedding, bounded memory). A request whose deadline has passed when its batch runs gets
DEADLINE_EXCEEDED and is not run. ``num_batch_threads`` batches run at once, in threads.
Batches are padded up to the next of ``allowed_batch_sizes`` and the padding dropped from the
results. Every request gets its own result or its own exception.

All queue state lives on the event loop thread; only ``Servable.predict`` runs in threads.

With a ``runner`` (a :class:`corolla.looprunner.LoopRunner`, where a process has one core), batches
run on the event loop instead, one at a time, and eager dispatch closes a batch once the photos
that the runner still has to decode have joined it: as many requests as arrived while the
previous batch ran, decoded one after another, then one model run for all of them. With two
processes on two cores the tutorial CNN costs ~0.4 CPU ms less per photo this way than run one
photo at a time (a batch reads the dense layer's 16 MB of weights once; benchmarks/floor_server.py
shows the same), which the tuner, timing one idle thread, cannot see.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corolla.clock import LOOP_CLOCK, Clock, Timer
from corolla.errors import (
    CorollaError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from corolla.looprunner import LoopRunner
from corolla.runtimes.base import Servable
from corolla.tensors import Tensors

log = logging.getLogger("corolla.batching")


@dataclass(frozen=True, kw_only=True)
class BatchingOptions:
    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 64
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    eager: bool = True
    # Measure each version at load and lower max_batch_size to the largest size that is still
    # cheapest per row (corolla.autotune). On for Corolla's defaults, off for parameter files.
    autotune: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.num_batch_threads < 1:
            raise InvalidArgument("batching: max_batch_size and num_batch_threads must be >= 1")
        if self.max_enqueued_batches < 1 or self.batch_timeout_micros < 0:
            raise InvalidArgument("batching: bad max_enqueued_batches or batch_timeout_micros")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise InvalidArgument("batching: allowed_batch_sizes must increase strictly")
            if sizes[-1] != self.max_batch_size:
                raise InvalidArgument(
                    "batching: the last allowed_batch_sizes entry must equal max_batch_size")


@dataclass(kw_only=True)
class _Task:
    inputs: Tensors
    rows: int
    deadline: float  # time.monotonic()
    future: asyncio.Future[Tensors]
    enqueued: float


# Requests that may share a batch: signature, output filter, and each input's name, dtype and
# per-row shape (its rank, with padding).
BatchKey = tuple[str, tuple[str, ...], tuple[tuple[str, str, int | tuple[int, ...]], ...]]


@dataclass(kw_only=True)
class _Batch:
    key: BatchKey
    signature: str
    output_filter: tuple[str, ...]
    tasks: list[_Task] = field(default_factory=list)
    rows: int = 0
    timer: Timer | None = None


# (batch size, queueing seconds of each task) after each batch runs; for metrics.
BatchHook = Callable[[int, list[float]], None]


class Batcher:
    def __init__(self, servable: Servable, options: BatchingOptions,
                 executor: Executor, runner: LoopRunner | None = None, *,
                 observe_run: Callable[[float], None] | None = None,
                 clock: Clock = LOOP_CLOCK) -> None:
        """``clock``: what batch timeouts and deadlines are measured on (tests drive it)."""
        self._servable = servable
        self._clock = clock
        # Called with the wall seconds of each batch's model run (runtime latency metrics).
        self._observe_run = observe_run
        self.options = options
        self._executor = executor
        # Batches run on the event loop (one at a time) instead of in the executor's threads:
        # see ``runner`` in the module docstring.
        self._runner = runner
        self._open: dict[BatchKey, _Batch] = {}
        self._ready: deque[_Batch] = deque()
        self._running = 0
        self._closed = False
        self.on_batch: list[BatchHook] = []

    @property
    def queue_depth(self) -> int:
        """Requests waiting (open and closed batches), not counting running ones."""
        return sum(len(b.tasks) for b in self._open.values()) + sum(
            len(b.tasks) for b in self._ready)

    def _key(self, inputs: Tensors, signature: str, output_filter: tuple[str, ...]
             ) -> BatchKey:
        # Requests share a batch when their rows have the same shapes (or, with padding, the
        # same ranks).
        pad = self.options.pad_variable_length_inputs
        shapes = tuple(sorted((k, v.dtype.str, v.ndim if pad else v.shape[1:])
                              for k, v in inputs.items()))
        return (signature, output_filter, shapes)

    def submit(self, inputs: Tensors, *, deadline: float, signature: str = "serving_default",
               output_filter: tuple[str, ...] = ()) -> asyncio.Future[Tensors]:
        """Enqueue one request; must be called on the event loop thread."""
        if self._closed:
            raise Unavailable("this model version is unloading; retry the request")
        rows = {int(v.shape[0]) for v in inputs.values()}
        if len(rows) != 1:
            raise InvalidArgument("all inputs of a request must have the same batch size")
        n = rows.pop()
        key = self._key(inputs, signature, output_filter)
        batch = self._open.get(key)
        if batch is not None and batch.rows + n > self.options.max_batch_size:
            self._close(batch)
            batch = None
        if batch is None:
            if len(self._ready) + len(self._open) >= self.options.max_enqueued_batches:
                raise ResourceExhausted(
                    "The batch scheduling queue to which this task was submitted is full")
            batch = _Batch(key=key, signature=signature, output_filter=output_filter)
            self._open[key] = batch
            batch.timer = self._clock.call_later(self.options.batch_timeout_micros / 1e6,
                                                 self._timeout, batch)
        fut: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        batch.tasks.append(_Task(inputs=inputs, rows=n, deadline=deadline, future=fut,
                                 enqueued=self._clock.now()))
        batch.rows += n
        if batch.rows >= self.options.max_batch_size or (self.options.eager and self._idle()):
            self._close(batch)
        return fut

    @property
    def _max_running(self) -> int:
        """Batches that run at once: one on the loop, else one per batch thread."""
        return 1 if self._runner is not None else self.options.num_batch_threads

    def _decoding(self) -> bool:
        """On the loop: whether photos of requests for this batcher still wait to be decoded
        (the service submits their decode jobs tagged with the batcher)."""
        return self._runner is not None and self._runner.pending(self)

    def _idle(self) -> bool:
        """Eager dispatch: whether a batch closed now would start at once, and nothing that
        could still join it is on its way."""
        if self._ready or self._running >= self._max_running:
            return False
        # On the event loop, a request whose photo is queued for decoding joins the batch one
        # loop iteration after its decode: wait for those (bounded by the model's queue), then
        # run one batch for all.
        return not self._decoding()

    def _timeout(self, batch: _Batch) -> None:
        if self.options.eager and self._decoding():
            # Eager batching on the loop closes a batch once the photos queued for decoding
            # have joined it (_idle); the timeout only guards against a stall.
            batch.timer = self._clock.call_later(
                self.options.batch_timeout_micros / 1e6, self._timeout, batch)
            return
        self._close(batch)

    def _close(self, batch: _Batch) -> None:
        if self._open.get(batch.key) is not batch:
            return  # already closed
        del self._open[batch.key]
        if batch.timer is not None:
            batch.timer.cancel()
        self._ready.append(batch)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._ready and self._running < self._max_running:
            batch = self._ready.popleft()
            self._running += 1
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: _Batch) -> None:
        try:
            now = self._clock.now()
            live = []
            for t in batch.tasks:
                if t.future.done():  # the caller gave up (disconnect, cancellation)
                    continue
                if t.deadline <= now:
                    t.future.set_exception(DeadlineExceeded(
                        "Deadline exceeded while the request waited in the batch queue"))
                    continue
                live.append(t)
            if live:
                await self._execute(batch, live, now)
        finally:
            self._running -= 1
            self._dispatch()
            # An open batch may have been waiting only for a free thread.
            if self.options.eager and self._open and self._idle():
                self._close(next(iter(self._open.values())))

    async def _execute(self, batch: _Batch, tasks: list[_Task], now: float) -> None:
        def merge_and_predict() -> tuple[Tensors, int]:
            # In the batch thread: concatenating a batch of images copies megabytes, which
            # must not hold up the event loop.
            inputs, total = self._merge(tasks)
            start = time.perf_counter()
            try:
                return self._servable.predict(inputs, signature=batch.signature,
                                              output_filter=batch.output_filter), total
            finally:
                if self._observe_run is not None:
                    self._observe_run(time.perf_counter() - start)

        try:
            if self._runner is not None:
                outputs, total = await self._runner.submit(merge_and_predict, urgent=True)
            else:
                outputs, total = await asyncio.get_running_loop().run_in_executor(
                    self._executor, merge_and_predict)
        except Exception as exc:
            err = exc if isinstance(exc, CorollaError) else Internal(f"inference failed: {exc!r}")
            if not isinstance(exc, CorollaError):
                log.exception("inference failed")
            for t in tasks:
                if not t.future.done():
                    t.future.set_exception(err)
            return
        for hook in self.on_batch:
            hook(total, [now - t.enqueued for t in tasks])
        self._split(outputs, tasks, total)

    def _merge(self, tasks: list[_Task]) -> tuple[Tensors, int]:
        rows = sum(t.rows for t in tasks)
        total = rows
        sizes = self.options.allowed_batch_sizes
        if sizes:
            total = next((s for s in sizes if s >= rows), rows)
        merged: Tensors = {}
        for name in tasks[0].inputs:
            parts = [t.inputs[name] for t in tasks]
            if self.options.pad_variable_length_inputs:
                parts = _pad_to_common_shape(parts)
            if total > rows:  # pad with copies of the last row; dropped from the results
                last = parts[-1][-1:]
                parts.append(np.repeat(last, total - rows, axis=0))
            merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return merged, total

    @staticmethod
    def _split(outputs: Tensors, tasks: list[_Task], total: int) -> None:
        bad = [k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != total]
        if bad:
            err = Internal(f"outputs {bad} do not have the batch size {total} as first dimension")
            for t in tasks:
                if not t.future.done():
                    t.future.set_exception(err)
            return
        start = 0
        for t in tasks:
            if not t.future.done():
                t.future.set_result({k: v[start:start + t.rows] for k, v in outputs.items()})
            start += t.rows

    def close(self) -> None:
        """Refuse new requests; called after the version's leases have drained."""
        self._closed = True
        for batch in list(self._open.values()):
            self._close(batch)


def _pad_to_common_shape(parts: list[np.ndarray]) -> list[np.ndarray]:
    target = tuple(max(p.shape[i] for p in parts) for i in range(1, parts[0].ndim))
    out = []
    for p in parts:
        if p.shape[1:] == target:
            out.append(p)
        else:
            pad = [(0, 0)] + [(0, t - s) for s, t in zip(p.shape[1:], target, strict=True)]
            out.append(np.pad(p, pad))
    return out


def parse_batching_parameters(text: str) -> BatchingOptions:
    """TF Serving's batching_parameters text format (a BatchingParameters message)."""
    from google.protobuf import text_format

    from corolla.protos.gen.tensorflow_serving.servables.tensorflow import (
        session_bundle_config_pb2 as sbc,
    )

    msg = sbc.BatchingParameters()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise InvalidArgument(f"batching parameters: {exc}") from exc
    d = BatchingOptions()
    kw: dict[str, Any] = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads"):
        if msg.HasField(name):
            kw[name] = int(getattr(msg, name).value)
    kw["pad_variable_length_inputs"] = bool(msg.pad_variable_length_inputs)
    if msg.allowed_batch_sizes:
        kw["allowed_batch_sizes"] = tuple(int(x) for x in msg.allowed_batch_sizes)
    # An explicit file means TF Serving's semantics: wait for the timeout or a full batch.
    kw["eager"] = False
    return BatchingOptions(**{**d.__dict__, **kw})
