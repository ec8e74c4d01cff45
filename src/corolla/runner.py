"""A loaded version's runner: its :class:`~corolla.runplan.RunPlan` composed into one object.

:func:`compose_runner` runs in the loader thread, before the version turns AVAILABLE: it reads
the version's own ``batching_params.pbtxt`` (when batching is on), measures the model where the
plan needs it (corolla.autotune), asks :func:`corolla.runplan.plan_for` for the plan and builds
a :class:`VersionRunner` from it: the batcher (in threads or on the event loop), or the queue
bound of a model that runs unbatched. The request path then makes one call,
:meth:`VersionRunner.run`, whatever the mode: it never branches on options.

The runner also reports what the metrics need: each model run's wall time (traffic only; load
time measurements and warmup call the servable directly), each batch's size and queueing times
(:class:`RunHooks`), and the queue depth.

Concurrency: ``run`` and the queue bound live on the event loop thread; only the servable's
``predict`` runs in the inference threads (or, in the loop modes, as loop-runner jobs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corolla.autotune import TuneResult, tune_max_batch_size
from corolla.batching import Batcher, BatchHook, BatchingOptions, parse_batching_parameters
from corolla.errors import CorollaError, DeadlineExceeded, Internal, ResourceExhausted
from corolla.looprunner import LoopRunner
from corolla.runplan import INLINE_WHOLE_MAX_MS, Mode, RunPlan, plan_for, tune_limit
from corolla.runtimes.base import HasArenaLimit, HasTuningIdentity, Servable
from corolla.tensors import Tensors, batch_rows
from corolla.tunecache import TuneCache

log = logging.getLogger("corolla.runner")

PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"


@dataclass(frozen=True, kw_only=True)
class RunHooks:
    """Observers of a version's traffic (the server's metrics)."""

    # Wall seconds of each model run.
    runtime: Callable[[float], None] | None = None
    # Size of each batch and the queueing seconds of its requests.
    batch: BatchHook | None = None


class Slots:
    """The queue bound of a plan without a batch queue: requests waiting or running (event
    loop thread only)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def acquire(self) -> None:
        """Take a place, or answer 429 at once when the queue is full."""
        if self.used >= self.limit:
            raise ResourceExhausted(
                "The batch scheduling queue to which this task was submitted is full")
        self.used += 1

    def release(self, _: object = None) -> None:
        self.used -= 1


class VersionRunner:
    """Runs a version's requests as its plan says. Built once per loaded version."""

    def __init__(self, plan: RunPlan, servable: Servable, *, executor: Executor,
                 loop_runner: LoopRunner, hooks: RunHooks | None = None) -> None:
        hooks = hooks or RunHooks()
        self.plan = plan
        self.servable = servable
        self._executor = executor
        self._loop_runner = loop_runner
        self._observe_run = hooks.runtime
        self.slots = Slots(plan.queue_limit) if plan.queue_limit else None
        self.batcher: Batcher | None = None
        if plan.batching is not None:
            self.batcher = Batcher(
                servable, plan.batching, executor,
                runner=loop_runner if plan.mode is Mode.BATCH_ON_LOOP else None,
                observe_run=hooks.runtime)
            if hooks.batch is not None:
                self.batcher.on_batch.append(hooks.batch)

    @property
    def queue_depth(self) -> int:
        """Requests waiting in the batch queue, or holding a place in the queue bound."""
        if self.batcher is not None:
            return self.batcher.queue_depth
        return self.slots.used if self.slots is not None else 0

    def admit_early(self) -> bool:
        """Take a queue place for a whole request now, before its photos are decoded on the
        loop (its backlog then waits in the loop's queue, not only its inference); False when
        the plan takes places per model run instead (or has no bound). Give it back with
        :meth:`leave`."""
        if self.slots is None or not self.plan.decode_on_loop:
            return False
        self.slots.acquire()
        return True

    def leave(self) -> None:
        """Give back the place that :meth:`admit_early` took."""
        assert self.slots is not None
        self.slots.release()

    def predict(self, inputs: Tensors, signature: str, output_filter: tuple[str, ...]
                ) -> Tensors:
        """One model run, timed for the metrics (any thread)."""
        if self._observe_run is None:
            return self.servable.predict(inputs, signature=signature, output_filter=output_filter)
        start = time.perf_counter()
        try:
            return self.servable.predict(inputs, signature=signature, output_filter=output_filter)
        finally:
            self._observe_run(time.perf_counter() - start)

    async def run(self, inputs: Tensors, *, signature: str, output_filter: tuple[str, ...],
                  deadline: float, splittable: bool, admitted: bool = False) -> Tensors:
        """Run a request, in chunks of at most ``plan.rows`` rows when it has more.

        A model's working memory grows with the rows of a run (EfficientNet-Lite0: about 17 MB
        per row in ONNX Runtime), so one request of 1,000 small photos run whole took the server
        past 17 GB. Chunks run one after another through the same path as any request (batcher,
        queue slot or event loop), each checking the deadline, so memory stays that of one batch
        and a request past its deadline stops. Only ``splittable`` requests are split (every
        input and output has a variable first dimension: rows are independent, as batching
        assumes). ``admitted``: the request holds a place from :meth:`admit_early`.
        """
        rows = batch_rows(inputs)
        chunk = self.plan.rows
        if rows <= chunk or not splittable:
            return await self._run(inputs, signature, output_filter, deadline, admitted, rows)
        parts: list[Tensors] = []
        for start in range(0, rows, chunk):
            part = {k: v[start:start + chunk] for k, v in inputs.items()}
            parts.append(await self._run(part, signature, output_filter, deadline, admitted,
                                         rows))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _run(self, inputs: Tensors, signature: str, output_filter: tuple[str, ...],
                   deadline: float, admitted: bool, request_rows: int) -> Tensors:
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise DeadlineExceeded("Deadline exceeded before the request could run")
        # A big request run in chunks never runs inline: the loop would not get a turn.
        if self.plan.inline_rows and request_rows <= self.plan.inline_rows:
            # A model cheaper than the hand-off to a thread (measured at load): run it here.
            try:
                return self.predict(inputs, signature, output_filter)
            except CorollaError:
                raise
            except Exception as exc:
                raise Internal(f"inference failed: {exc!r}") from exc
        if self.batcher is not None:
            fut = self.batcher.submit(inputs, deadline=deadline, signature=signature,
                                      output_filter=output_filter)
        else:
            fut = self._submit_alone(inputs, signature, output_filter, deadline, admitted)
        # One timer per request instead of wait_for + shield (two extra futures): on expiry the
        # future is cancelled, which the batcher sees as "caller gone" and skips.
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            fut.cancel()

        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + timeout, expire)
        try:
            return await fut
        except asyncio.CancelledError:
            if expired:
                raise DeadlineExceeded("Deadline exceeded while waiting for the model") from None
            raise
        except CorollaError:
            raise
        except Exception as exc:
            raise Internal(f"inference failed: {exc!r}") from exc
        finally:
            timer.cancel()

    def _submit_alone(self, inputs: Tensors, signature: str, output_filter: tuple[str, ...],
                      deadline: float, admitted: bool) -> asyncio.Future[Tensors]:
        """An unbatched run, in the inference threads or (LOOP) on the event loop."""
        slots = None if admitted else self.slots
        if slots is not None:
            slots.acquire()

        def call() -> Tensors:
            # The timer in _run cancels a waiting request at its deadline, but a job can start
            # before the loop has run the timer (the loop was busy): check here too.
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("Deadline exceeded while waiting for the model")
            return self.predict(inputs, signature, output_filter)

        fut: asyncio.Future[Tensors]
        try:
            if self.plan.mode is Mode.LOOP:
                fut = self._loop_runner.submit(call, urgent=True)
            else:
                fut = asyncio.get_running_loop().run_in_executor(self._executor, call)
        except BaseException:
            if slots is not None:
                slots.release()  # nothing was queued (the pool is shutting down)
            raise
        if slots is not None:
            fut.add_done_callback(slots.release)
        return fut


def compose_runner(servable: Servable, path: Path, *, batching: BatchingOptions | None,
                   inline_requests: bool, executor: Executor, loop_runner: LoopRunner,
                   hooks: RunHooks | None = None, name: str = "", version: int = 0,
                   tune_cache: TuneCache | None = None) -> VersionRunner:
    """Plan and compose a loading version's runner (in a loader thread, before AVAILABLE).

    As with TF Serving's --enable_per_model_batching_parameters, a version directory may hold
    its own ``batching_params.pbtxt``; it applies when batching is enabled. ``tune_cache``
    keeps the measurements of a model file on this machine across restarts.
    """
    per_model = None
    if batching is not None and (path / PER_MODEL_BATCHING_FILE).is_file():
        per_model = parse_batching_parameters(
            (path / PER_MODEL_BATCHING_FILE).read_text(encoding="utf-8"))
    limit = tune_limit(batching=batching, per_model=per_model is not None,
                       inline_requests=inline_requests)
    tuned = None
    if limit is not None:
        cap = limit

        def measure() -> TuneResult | None:
            return tune_max_batch_size(servable, limit=cap)

        if tune_cache is None:
            tuned = measure()
        else:
            identity = (servable.tuning_identity()
                        if isinstance(servable, HasTuningIdentity) else None)
            tuned, cached = tune_cache.get_or_measure(identity, limit, measure,
                                                      describe=f"{name} {version} {path}")
            if cached:
                log.info("model %s version %d: batch sizes measured before on this machine "
                         "(tuning cache %s)", name, version, tune_cache.directory)
    plan = plan_for(batching=batching, per_model=per_model, inline_requests=inline_requests,
                    tuned=tuned)
    _log_plan(name, version, plan, inline_requests)
    if isinstance(servable, HasArenaLimit):  # the batch measurements' memory is given back
        servable.limit_arena(plan.rows)
    return VersionRunner(plan, servable, executor=executor, loop_runner=loop_runner,
                         hooks=hooks)


def _log_plan(name: str, version: int, plan: RunPlan, inline_requests: bool) -> None:
    tuned = plan.tune
    if tuned is None:
        return
    if plan.batching is not None or plan.rows == 1:  # measured for batching
        log.info("model %s version %d: max_batch_size %d (CPU ms per row by batch size: %s)",
                 name, version, tuned.max_batch_size,
                 {k: round(v, 3) for k, v in tuned.cost_per_row_ms.items()})
    if plan.inline_rows:
        log.info("model %s version %d runs inline on the event loop (%.3f ms per call)",
                 name, version, tuned.blocking_ms(1) or 0.0)
    if plan.rows == 1:
        log.info("model %s version %d runs unbatched: batching does not save CPU here",
                 name, version)
    if plan.mode is Mode.BATCH_ON_LOOP:
        log.info("model %s version %d: whole requests run on the event loop, photos decoded "
                 "one by one and run in batches of up to %d (one core per process; %.1f ms per "
                 "batch)", name, version, plan.rows, tuned.blocking_ms(plan.rows) or 0.0)
        return
    cost = tuned.blocking_ms(1)
    if not inline_requests or cost is None or (plan.batched and not plan.inline_rows):
        return
    if plan.decode_on_loop:
        log.info("model %s version %d: whole requests run on the event loop (one core per "
                 "process; %.2f ms per inference)", name, version, cost)
    else:
        log.info("model %s version %d: inference in a thread (%.1f ms per inference is above "
                 "the %.0f ms run inline)", name, version, cost, INLINE_WHOLE_MAX_MS)
