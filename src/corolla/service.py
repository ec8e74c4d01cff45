"""The prediction service: the one core that every protocol frontend calls.

lookup + lease -> validate -> decode images (worker threads) -> batcher or direct run (worker
threads) -> postprocess. REST v1, KServe V2 and both gRPC APIs are thin translators over this
class: they turn wire formats into :data:`Tensors` (numeric numpy arrays, or object arrays of
``bytes`` for strings and encoded images) and back. Errors are :class:`CorollaError`.
Every coroutine here runs on the event loop; nothing blocking runs on it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from corolla.autotune import TuneResult, tune_max_batch_size
from corolla.batching import Batcher, BatchingOptions, parse_batching_parameters
from corolla.config import ModelConfig
from corolla.errors import (
    CorollaError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ResourceExhausted,
)
from corolla.images import ImageLimits, preprocess_image
from corolla.looprunner import LoopRunner
from corolla.model_dir import ImagePreprocessing, ModelMetadata, Signature
from corolla.repository.manager import Manager, VersionStatus
from corolla.repository.policy import State
from corolla.repository.serving_map import LoadedVersion
from corolla.runtimes.base import Activity
from corolla.tensors import Tensors, format_shape, numpy_dtype, shape_matches

log = logging.getLogger("corolla.service")

DEFAULT_SIGNATURE = "serving_default"
PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    @property
    def signature(self) -> str:
        return self.signature_name or DEFAULT_SIGNATURE


@dataclass(frozen=True, kw_only=True)
class PredictResult:
    name: str
    version: int
    signature_name: str
    outputs: Tensors
    metadata: ModelMetadata


@dataclass(frozen=True, kw_only=True)
class ClassifyResult:
    name: str
    version: int
    signature_name: str
    # One list per example: (label, score) best first.
    classes: list[list[tuple[str, float]]]


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
# Uploads bigger than this are decoded in a thread even then: a 12-megapixel JPEG takes tens of
# milliseconds to decode, which the loop should not spend away from its sockets.
INLINE_DECODE_MAX_BYTES = 1 << 20
# With tuned (small) batch sizes the queue still holds at least this many rows before it sheds
# load: 64 batches of 1 photo would refuse requests at concurrency 64.
QUEUE_MIN_ROWS = 256
# Encoded images in one request may decode to at most this much model input by default
# (--max_decoded_image_mib).
MAX_DECODED_IMAGE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class ServiceOptions:
    batching: BatchingOptions | None = field(default_factory=BatchingOptions)
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    default_timeout: float = 30.0
    max_batch_rows: int = 4096  # rows in one request
    # Encoded images in one request may decode to at most this many bytes of model input (a
    # 1x1 JPEG of ~600 bytes becomes 602 KB at 224x224x3 float32): checked before decoding.
    max_decoded_image_bytes: int = MAX_DECODED_IMAGE_BYTES
    # Run cheap unbatched models' whole requests on the event loop (see INLINE_WHOLE_MAX_MS):
    # the server turns this on where a process has one core (--inline_requests=auto).
    inline_requests: bool = False


class PredictionService:
    def __init__(self, manager: Manager, *, options: ServiceOptions,
                 decode_executor: ThreadPoolExecutor, infer_executor: ThreadPoolExecutor,
                 activity: Activity | None = None) -> None:
        self.manager = manager
        self.options = options
        # Requests in flight and load-time measurements, shared with the runtimes: a request
        # served alone may run on more threads (runtimes/onnx.py, solo session).
        self.activity = activity or Activity()
        self._decode = decode_executor
        self._infer = infer_executor
        # Set by the server when it starts shutting down: readiness turns false at once.
        self.draining = False
        # Decoding and inference on the event loop, for versions marked "inline_whole".
        self.loop_runner = LoopRunner()
        # Other processes serving the same models (workers): ReloadConfig reaches them too.
        self.reload_listeners: list[
            Callable[[Sequence[ModelConfig], float | None], Awaitable[None]]] = []
        # In a worker process: ReloadConfig goes to the main process, which applies it
        # everywhere (this process included, through reload_config_here).
        self.reload_via: Callable[[Sequence[ModelConfig], float | None],
                                  Awaitable[None]] | None = None
        manager.prepare.append(self.in_background(self._attach_batcher))

    def in_background(self, hook: Callable[[LoadedVersion], None]
                      ) -> Callable[[LoadedVersion], None]:
        """A load-time hook (tuning, warmup) whose model runs time one thread, as traffic
        does: no solo session while it runs."""

        def run(loaded: LoadedVersion) -> None:
            with self.activity.background():
                hook(loaded)

        return run

    def ready(self) -> bool:
        """Server readiness: not draining and every configured model has a version AVAILABLE."""
        return not self.draining and self.manager.all_ready()

    def model_ready(self, name: str) -> bool:
        return not self.draining and self.manager.model_ready(name)

    # ---- lifecycle hooks ---------------------------------------------------------------

    def _attach_batcher(self, loaded: LoadedVersion) -> None:
        """Give a loading version its batcher (runs in a loader thread, before AVAILABLE).

        As with TF Serving's --enable_per_model_batching_parameters, a version directory may
        hold its own ``batching_params.pbtxt``; it applies when batching is enabled.
        """
        # Requests with more rows than this run as several model runs of at most this many
        # rows, one after another (see _run_in_chunks); replaced below by the batch size that
        # batching uses for this version.
        loaded.extras["run_rows"] = BatchingOptions().max_batch_size
        if self.options.batching is None:
            self._inline_whole(loaded, None)
            return
        options = self.options.batching
        runner: LoopRunner | None = None  # batches run in threads unless set below
        per_model = loaded.path / PER_MODEL_BATCHING_FILE
        if per_model.is_file():
            options = parse_batching_parameters(per_model.read_text(encoding="utf-8"))
        elif options.autotune:
            inner = getattr(loaded.servable, "inner", loaded.servable)  # not the metrics wrapper
            tuned = tune_max_batch_size(inner, limit=options.max_batch_size)
            if tuned is not None:
                log.info("model %s version %d: max_batch_size %d (CPU ms per row by batch "
                         "size: %s)", loaded.name, loaded.version, tuned.max_batch_size,
                         {k: round(v, 3) for k, v in tuned.cost_per_row_ms.items()})
                size = tuned.max_batch_size
                options = _with_batch_size(options, size)
                loaded.extras["autotune"] = tuned
                call_ms = tuned.blocking_ms(1)
                if call_ms is not None and call_ms <= INLINE_MAX_MS:
                    log.info("model %s version %d runs inline on the event loop (%.3f ms per "
                             "call)", loaded.name, loaded.version, call_ms)
                    loaded.extras["inline_rows"] = INLINE_MAX_ROWS
                    self._inline_whole(loaded, tuned)  # its photos are decoded inline too
                if size == 1:
                    loaded.extras["run_rows"] = 1
                    # Batches of one would only add the batcher's hand-offs (measured: 5-10%
                    # fewer photos/s). Requests run as they come, in the inference threads, with
                    # the same bounded queue (429 when full) and deadlines.
                    log.info("model %s version %d runs unbatched: batching does not save CPU "
                             "here", loaded.name, loaded.version)
                    loaded.extras["slots"] = Slots(options.max_enqueued_batches)
                    self._inline_whole(loaded, tuned)
                    return
                inline = self._inline_batch_size(tuned, size)
                if inline and "inline_rows" not in loaded.extras:
                    log.info("model %s version %d: whole requests run on the event loop, "
                             "photos decoded one by one and run in batches of up to %d (one "
                             "core per process; %.1f ms per batch)", loaded.name,
                             loaded.version, inline, tuned.blocking_ms(inline) or 0.0)
                    options = _with_batch_size(options, inline)
                    runner = self.loop_runner
                    loaded.extras["inline_whole"] = True
                    # Photos wait to be decoded on the loop before their request reaches the
                    # batcher's queue bound: requests take a place before that (predict), as
                    # many as the batcher's queue holds, so overload answers 429 at once.
                    loaded.extras["slots"] = Slots(options.max_enqueued_batches * inline)
        loaded.extras["run_rows"] = options.max_batch_size
        loaded.extras["batcher"] = Batcher(loaded.servable, options, self._infer, runner=runner)

    def _inline_batch_size(self, tuned: TuneResult, size: int) -> int:
        """Where a process has one core: the largest measured batch size up to ``size`` whose
        run holds the loop at most INLINE_WHOLE_MAX_MS, or 0 to run batches in threads."""
        if not self.options.inline_requests:
            return 0
        fits = [s for s in tuned.cost_per_row_ms
                if s <= size and (ms := tuned.blocking_ms(s)) is not None
                and ms <= INLINE_WHOLE_MAX_MS]
        best = max(fits, default=0)
        return best if best >= 2 else 0

    def _inline_whole(self, loaded: LoadedVersion, tuned: TuneResult | None) -> None:
        """Mark a version (unbatched, or cheap enough to infer inline) to decode and infer on
        the event loop (``loop_runner``), where the options allow it and its inference at
        batch 1 is cheap enough (measured here unless the batch-size tuning already did)."""
        if not self.options.inline_requests or "inline_whole" in loaded.extras:
            return  # off, or already decided for this version
        if tuned is None:
            inner = getattr(loaded.servable, "inner", loaded.servable)
            tuned = tune_max_batch_size(inner, limit=1)
        cost = None if tuned is None else tuned.blocking_ms(1)
        if cost is None:  # the signature cannot be timed (strings, unknown sizes)
            return
        if cost <= INLINE_WHOLE_MAX_MS:
            log.info("model %s version %d: whole requests run on the event loop (one core "
                     "per process; %.2f ms per inference)", loaded.name, loaded.version, cost)
            loaded.extras["inline_whole"] = True
        else:
            loaded.extras["inline_whole"] = False
            log.info("model %s version %d: inference in a thread (%.1f ms per inference is "
                     "above the %.0f ms run inline)", loaded.name, loaded.version, cost,
                     INLINE_WHOLE_MAX_MS)

    async def reload_config(self, configs: Sequence[ModelConfig], *,
                            timeout: float | None = None) -> None:
        """TF Serving's ReloadConfig: serve exactly ``configs``; return once every model's
        aspired versions are AVAILABLE, or raise the error of one that failed to load (or of
        a base path that cannot be read); DEADLINE_EXCEEDED past ``timeout``."""
        if self.reload_via is not None:
            await self.reload_via(configs, timeout)
            return
        await self.reload_config_here(configs, timeout=timeout)

    async def reload_config_here(self, configs: Sequence[ModelConfig], *,
                                 timeout: float | None = None) -> None:
        """reload_config in this process (and its reload_listeners), never forwarded."""
        await self.manager.set_configs(configs)
        others = [asyncio.ensure_future(f(configs, timeout)) for f in self.reload_listeners]
        try:
            await self._settled(configs, timeout)
        finally:
            results = await asyncio.gather(*others, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _settled(self, configs: Sequence[ModelConfig], timeout: float | None) -> None:
        from corolla.errors import DeadlineExceeded, NotFound

        names = [c.name for c in configs]
        try:
            await self.manager.wait_until(
                lambda: all(self.manager.settled(n) for n in names), timeout)
        except TimeoutError as exc:
            raise DeadlineExceeded("ReloadConfig: models did not finish loading in time") from exc
        for name in names:
            statuses = self.manager.statuses(name)
            err = self.manager.source_error(name)
            if err is not None and not statuses:
                raise NotFound(err)
            for s in statuses:
                if s.state == State.END and s.error is not None:
                    raise s.error

    # ---- lookups -------------------------------------------------------------------------

    def lease(self, spec: ModelSpec) -> LoadedVersion:
        return self.manager.serving_map.lease(spec.name, spec.version, spec.label)

    def statuses(self, name: str, version: int | None = None, label: str | None = None
                 ) -> list[VersionStatus]:
        from corolla.errors import NotFound

        if version is not None and label is not None:
            raise InvalidArgument("Both version and version_label are set; use at most one")
        if not self.manager.has_model(name):
            raise NotFound(f"Could not find any versions of model {name}")
        statuses = self.manager.statuses(name)
        if label is not None:
            cfg = self.manager.config(name)
            if cfg is None or label not in cfg.version_labels:
                # INVALID_ARGUMENT, as TF Serving's ServerCore::GetModelVersionForLabel answers.
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            version = cfg.version_labels[label]
        if version is not None:
            statuses = [s for s in statuses if s.version == version]
            if not statuses:
                raise NotFound(f"Could not find version {version} of model {name}")
        if not statuses:
            err = self.manager.source_error(name)
            raise NotFound(err or f"Could not find any versions of model {name}")
        return statuses

    def metadata(self, spec: ModelSpec) -> tuple[int, ModelMetadata]:
        loaded = self.manager.serving_map.find(spec.name, spec.version, spec.label)
        return loaded.version, loaded.metadata

    def max_batch_size(self, spec: ModelSpec) -> int:
        """The batch size batching forms for this version (tuned at load, or its parameters);
        for a version that runs requests as they come, the configured (or default) batching
        max_batch_size. Requests may carry any number of rows either way."""
        loaded = self.manager.serving_map.find(spec.name, spec.version, spec.label)
        batcher = loaded.extras.get("batcher")
        if isinstance(batcher, Batcher):
            return batcher.options.max_batch_size
        return (self.options.batching or BatchingOptions()).max_batch_size

    # ---- prediction ----------------------------------------------------------------------

    def deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (timeout if timeout is not None else self.options.default_timeout)

    async def predict(self, spec: ModelSpec, inputs: dict[str, np.ndarray], *,
                      output_filter: Sequence[str] = (), deadline: float | None = None
                      ) -> PredictResult:
        deadline = deadline if deadline is not None else self.deadline(None)
        self.activity.requests += 1
        try:
            return await self._predict(spec, inputs, output_filter, deadline)
        finally:
            self.activity.requests -= 1

    async def _predict(self, spec: ModelSpec, inputs: dict[str, np.ndarray],
                       output_filter: Sequence[str], deadline: float) -> PredictResult:
        with self.lease(spec) as loaded:
            sig = self._signature(loaded, spec)
            filt = self._output_filter(sig, spec, output_filter)
            # A request run on the event loop holds its queue slot from before its photos are
            # decoded: its whole backlog waits in the loop's queue, not only the inference.
            held = None
            slots = loaded.extras.get("slots")
            if loaded.extras.get("inline_whole") and isinstance(slots, Slots):
                slots.acquire()
                held = slots
            try:
                prepared = await self._prepare_inputs(loaded, sig, spec, inputs, deadline)
                outputs = await self._run_in_chunks(loaded, sig, spec.signature, prepared, filt,
                                                    deadline, slot_held=held is not None)
            finally:
                if held is not None:
                    held.release()
            return PredictResult(name=spec.name, version=loaded.version,
                                 signature_name=spec.signature, outputs=outputs,
                                 metadata=loaded.metadata)

    async def predict_images(self, spec: ModelSpec, images: Sequence[bytes], *,
                             deadline: float | None = None) -> PredictResult:
        """Encoded images (uploads) into the model's image input."""
        with self.lease(spec) as loaded:
            pre = loaded.metadata.preprocessing
            if pre is None:
                raise FailedPrecondition(
                    f"model {spec.name} version {loaded.version} does not declare image "
                    "preprocessing, so it cannot take encoded images")
            arr = np.empty(len(images), dtype=object)
            arr[:] = list(images)
        return await self.predict(spec, {pre.input: arr}, deadline=deadline)

    async def classify(self, spec: ModelSpec, inputs: dict[str, np.ndarray], *,
                       top_k: int | None = None, deadline: float | None = None
                       ) -> ClassifyResult:
        result = await self.predict(spec, inputs, deadline=deadline)
        md = result.metadata
        if not md.labels or md.scores_output is None:
            raise FailedPrecondition(
                f"model {spec.name} version {result.version} is not a classifier (no labels "
                "in its metadata); use :predict")
        return ClassifyResult(name=result.name, version=result.version,
                              signature_name=result.signature_name,
                              classes=top_classes(md, result.outputs, top_k))

    def _signature(self, loaded: LoadedVersion, spec: ModelSpec) -> Signature:
        return find_signature(loaded.metadata, spec)

    @staticmethod
    def _output_filter(sig: Signature, spec: ModelSpec, output_filter: Sequence[str]
                       ) -> tuple[str, ...]:
        for name in output_filter:
            if name not in sig.outputs:
                raise InvalidArgument(
                    f"output tensor alias not found in signature: {name} "
                    f"(outputs: {sorted(sig.outputs)})")
        return tuple(output_filter)

    async def _prepare_inputs(self, loaded: LoadedVersion, sig: Signature, spec: ModelSpec,
                              inputs: dict[str, np.ndarray], deadline: float | None = None
                              ) -> Tensors:
        unknown = sorted(set(inputs) - set(sig.inputs))
        if unknown:
            raise InvalidArgument(
                f"input tensor alias not found in signature: {', '.join(unknown)} "
                f"(model {spec.name} expects {sorted(sig.inputs)})")
        missing = sorted(set(sig.inputs) - set(inputs))
        if missing:
            raise InvalidArgument(
                f"missing input(s) {', '.join(missing)} (model {spec.name} expects "
                f"{sorted(sig.inputs)})")
        pre = loaded.metadata.preprocessing
        out: Tensors = {}
        for alias, value in inputs.items():
            tspec = sig.inputs[alias]
            if value.dtype == object and tspec.dtype != "string":
                if pre is None or pre.input != alias:
                    raise InvalidArgument(
                        f"input {alias!r} expects {tspec.dtype} values, got strings/bytes")
                value = await self._decode_images(
                    value, pre, inline=bool(loaded.extras.get("inline_whole")),
                    deadline=deadline, tag=loaded.extras.get("batcher"))
            else:
                value = _coerce(alias, value, tspec.dtype,
                                finite=pre is not None and pre.input == alias)
            if value.ndim == 0 or value.shape[0] == 0:
                raise InvalidArgument(f"input {alias!r} has no rows")
            if value.shape[0] > self.options.max_batch_rows:
                raise InvalidArgument(
                    f"input {alias!r} has {value.shape[0]} rows; at most "
                    f"{self.options.max_batch_rows} per request")
            if not shape_matches(value.shape, tspec.shape):
                raise InvalidArgument(
                    f"input {alias!r} has shape {format_shape(value.shape)} but the model "
                    f"expects {format_shape(tspec.shape)} (-1: any size)")
            out[alias] = value
        return out

    async def _decode_images(self, value: np.ndarray, pre: ImagePreprocessing, *,
                             inline: bool = False, deadline: float | None = None,
                             tag: object = None) -> np.ndarray:
        flat = value.reshape(-1)
        if value.ndim != 1:
            raise InvalidArgument(
                f"encoded images for input {pre.input!r} must be a list of images, one per row")
        if not len(flat):
            raise InvalidArgument(f"input {pre.input!r} has no rows")
        # Refuse too many images before decoding any: each becomes a whole model input.
        if len(flat) > self.options.max_batch_rows:
            raise InvalidArgument(
                f"input {pre.input!r} has {len(flat)} images; at most "
                f"{self.options.max_batch_rows} per request")
        row_bytes = math.prod(pre.input_shape) * np.dtype(pre.dtype).itemsize
        if len(flat) * row_bytes > self.options.max_decoded_image_bytes:
            raise InvalidArgument(
                f"input {pre.input!r} has {len(flat)} images; at most "
                f"{max(1, self.options.max_decoded_image_bytes // row_bytes)} per request for "
                f"this model (each decodes to {row_bytes} bytes)")
        loop = asyncio.get_running_loop()
        limits = self.options.image_limits

        def one(i: int, data: object) -> np.ndarray:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded("Deadline exceeded while waiting to decode the image")
            if not isinstance(data, bytes | bytearray | memoryview):
                raise InvalidArgument(f"image {i}: expected bytes")
            try:
                return preprocess_image(bytes(data), pre, limits=limits)
            except CorollaError as exc:
                raise type(exc)(f"image {i}: {exc.message}", exc.code) from exc

        def submit(i: int, data: object) -> asyncio.Future[np.ndarray]:
            # A big upload is decoded in a thread even here: the loop stays responsive.
            if inline and (not isinstance(data, bytes | bytearray | memoryview)
                           or len(data) <= INLINE_DECODE_MAX_BYTES):
                # The tag (the version's batcher) lets a batch wait for these photos.
                return self.loop_runner.submit(one, i, data, tag=tag)
            return loop.run_in_executor(self._decode, one, i, data)

        if len(flat) == 1:  # the common case: no gather, and a view instead of a copy
            return (await submit(0, flat[0]))[np.newaxis]
        return np.stack(await asyncio.gather(*(submit(i, d) for i, d in enumerate(flat))))

    async def _run_in_chunks(self, loaded: LoadedVersion, sig: Signature, signature: str,
                             inputs: Tensors, output_filter: tuple[str, ...], deadline: float,
                             *, slot_held: bool = False) -> Tensors:
        """Run a request, in chunks of at most the version's batch size when it has more rows.

        A model's working memory grows with the rows of a run (EfficientNet-Lite0: about 17 MB
        per row in ONNX Runtime), so one request of 1,000 small photos run whole took the server
        past 17 GB. Chunks run one after another through the same path as any request (batcher,
        queue slot or event loop), each checking the deadline, so memory stays that of one batch
        and a request past its deadline stops. Only signatures whose every input and output has
        a variable first dimension are split: their rows are independent, as batching assumes.
        """
        rows = _rows(inputs)
        chunk = loaded.extras.get("run_rows")
        if (not isinstance(chunk, int) or chunk < 1 or rows <= chunk
                or not _splittable(sig, inputs, output_filter)):
            return await self._run(loaded, signature, inputs, output_filter, deadline,
                                   slot_held=slot_held)
        parts: list[Tensors] = []
        for start in range(0, rows, chunk):
            part = {k: v[start:start + chunk] for k, v in inputs.items()}
            parts.append(await self._run(loaded, signature, part, output_filter, deadline,
                                         slot_held=slot_held, request_rows=rows))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _run(self, loaded: LoadedVersion, signature: str, inputs: Tensors,
                   output_filter: tuple[str, ...], deadline: float, *, slot_held: bool = False,
                   request_rows: int | None = None) -> Tensors:
        batcher = loaded.extras.get("batcher")
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise DeadlineExceeded("Deadline exceeded before the request could run")
        inline_rows = loaded.extras.get("inline_rows", 0)
        # A big request run in chunks never runs inline: the loop would not get a turn.
        rows = request_rows if request_rows is not None else _rows(inputs)
        if isinstance(inline_rows, int) and inline_rows and rows <= inline_rows:
            # A model cheaper than the hand-off to a thread (measured at load): run it here.
            try:
                return loaded.servable.predict(inputs, signature=signature,
                                               output_filter=output_filter)
            except CorollaError:
                raise
            except Exception as exc:
                raise Internal(f"inference failed: {exc!r}") from exc
        if isinstance(batcher, Batcher):
            fut = batcher.submit(inputs, deadline=deadline, signature=signature,
                                 output_filter=output_filter)
        else:
            slots = None if slot_held else loaded.extras.get("slots")
            if isinstance(slots, Slots):
                slots.acquire()

            def call() -> Tensors:
                # The timer below cancels a waiting request at its deadline, but a job can
                # start before the loop has run the timer (the loop was busy): check here too.
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded("Deadline exceeded while waiting for the model")
                return loaded.servable.predict(inputs, signature=signature,
                                               output_filter=output_filter)

            try:
                if loaded.extras.get("inline_whole"):
                    fut = self.loop_runner.submit(call, urgent=True)
                else:
                    fut = asyncio.get_running_loop().run_in_executor(self._infer, call)
            except BaseException:
                if isinstance(slots, Slots):
                    slots.release()  # nothing was queued (the pool is shutting down)
                raise
            if isinstance(slots, Slots):
                fut.add_done_callback(slots.release)
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


class Slots:
    """The queue bound of a model that runs unbatched: requests waiting or running (event loop
    thread only)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def queue_depth(self) -> int:
        return self.used

    def acquire(self) -> None:
        """Take a place, or answer 429 at once when the queue is full."""
        if self.used >= self.limit:
            raise ResourceExhausted(
                "The batch scheduling queue to which this task was submitted is full")
        self.used += 1

    def release(self, _: object = None) -> None:
        self.used -= 1


def _with_batch_size(options: BatchingOptions, size: int) -> BatchingOptions:
    """``options`` with batches of ``size`` rows and a queue of at least QUEUE_MIN_ROWS rows."""
    return replace(options, max_batch_size=size, max_enqueued_batches=max(
        options.max_enqueued_batches, -(-QUEUE_MIN_ROWS // size)))


def _splittable(sig: Signature, inputs: Tensors, output_filter: tuple[str, ...]) -> bool:
    """Whether a request may run as several runs along its first dimension."""
    outputs = [sig.outputs[k] for k in output_filter] if output_filter else sig.outputs.values()
    specs = [*(sig.inputs[k] for k in inputs if k in sig.inputs), *outputs]
    return all(t.batched for t in specs)


def _rows(inputs: Tensors) -> int:
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def find_signature(md: ModelMetadata, spec: ModelSpec) -> Signature:
    sig = md.signatures.get(spec.signature)
    if sig is None:
        raise InvalidArgument(
            f"Serving signature name: \"{spec.signature}\" not found in signature def "
            f"(model {spec.name} has: {sorted(md.signatures)})")
    return sig


def _coerce(alias: str, value: np.ndarray, dtype: str, *, finite: bool) -> np.ndarray:
    target = numpy_dtype(dtype)
    if value.dtype == target:
        out = value
    elif target.kind == "f" and value.dtype.kind in "iubf":
        out = value.astype(target)
    elif target.kind in "iu" and value.dtype.kind in "iu":
        info = np.iinfo(target)
        if value.size and (value.min() < info.min or value.max() > info.max):
            raise InvalidArgument(f"input {alias!r}: values out of range for {dtype}")
        out = value.astype(target)
    elif target.kind == "b" and value.dtype.kind == "b":
        out = value
    elif target.kind == "O":
        raise InvalidArgument(f"input {alias!r} expects strings, got {value.dtype.name} values")
    else:
        raise InvalidArgument(
            f"input {alias!r} expects {dtype} values, got {value.dtype.name} values")
    if (finite or out.dtype.kind != "f") and out.dtype.kind == "f" and not np.isfinite(out).all():
        raise InvalidArgument(f"input {alias!r} contains NaN or infinite values")
    return out


def top_classes(md: ModelMetadata, outputs: Tensors, top_k: int | None
                ) -> list[list[tuple[str, float]]]:
    scores = outputs.get(md.scores_output or "")
    if scores is None:
        raise Internal("the classifier's scores output is missing from the result")
    scores = np.asarray(scores, dtype=np.float64).reshape(scores.shape[0], -1)
    if not md.scores_are_probabilities:
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = e / e.sum(axis=1, keepdims=True)
    k = len(md.labels) if not top_k else max(1, min(top_k, len(md.labels)))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k].tolist()
    labels = md.labels
    # Python lists: indexing them is cheaper than making numpy scalars (float64 values, so the
    # floats are the same).
    return [[(labels[j], values[j]) for j in row]
            for row, values in zip(order, scores.tolist(), strict=True)]
