"""The prediction service: the one core that every protocol frontend calls.

lookup + lease -> validate -> decode images (worker threads, or the event loop where the
version's plan says so) -> the version's runner (corolla.runner: batcher, inference threads or
the event loop, composed at load) -> postprocess. REST v1, KServe V2 and both gRPC APIs are
thin translators over this class: they turn wire formats into :data:`Tensors` (numeric numpy
arrays, or object arrays of ``bytes`` for strings and encoded images) and back. Errors are
:class:`CorollaError`. Every coroutine here runs on the event loop; nothing blocking runs on it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from corolla import admission
from corolla.admission import MemoryBudget
from corolla.batching import BatchingOptions
from corolla.config import ModelConfig
from corolla.errors import (
    CorollaError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from corolla.images import ImageLimits, decode_cost, preprocess_image
from corolla.looprunner import LoopRunner
from corolla.model_dir import ImagePreprocessing, ModelMetadata, Signature
from corolla.repository.manager import Manager, PrepareHook, VersionStatus
from corolla.repository.policy import State
from corolla.repository.serving_map import LoadedVersion
from corolla.runner import RunHooks, VersionRunner, compose_runner
from corolla.runtimes.base import Activity
from corolla.tensors import Tensors, format_shape, numpy_dtype, shape_matches
from corolla.tunecache import TuneCache

if TYPE_CHECKING:
    from corolla.repository.serving_map import Answer

# Composes a loading version's answer (the prediction cache wraps the computation).
AnswerWrapper = Callable[[LoadedVersion, "Answer"], "Answer"]

log = logging.getLogger("corolla.service")

DEFAULT_SIGNATURE = "serving_default"


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


# Uploads bigger than this are decoded in a thread even then: a 12-megapixel JPEG takes tens of
# milliseconds to decode, which the loop should not spend away from its sockets.
INLINE_DECODE_MAX_BYTES = 1 << 20
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
    # Load-time batch-size measurements kept here across restarts (corolla.tunecache); "":
    # measured at every load.
    tune_cache_dir: str = ""
    # Bytes that requests may hold in flight in this process (bodies, parsed JSON, decoded
    # pixels): corolla.admission. 0: no budget.
    memory_budget_bytes: int = 0


class PredictionService:
    def __init__(self, manager: Manager, *, options: ServiceOptions,
                 decode_executor: Executor, infer_executor: Executor,
                 activity: Activity | None = None,
                 run_hooks: Callable[[LoadedVersion], RunHooks] | None = None,
                 warmup: PrepareHook | None = None,
                 wrap_answer: AnswerWrapper | None = None) -> None:
        """``run_hooks``: the observers of a version's traffic (the server's metrics);
        ``warmup``: run on each version after its runner is composed, before AVAILABLE;
        ``wrap_answer``: composes each version's answer at load (the prediction cache)."""
        self.manager = manager
        self.options = options
        # Requests in flight and load-time measurements, shared with the runtimes: a request
        # served alone may run on more threads (runtimes/onnx.py, solo session).
        self.activity = activity or Activity()
        self._decode = decode_executor
        self._infer = infer_executor
        self._run_hooks = run_hooks
        self._warmup = warmup
        self._wrap_answer = wrap_answer
        self._tune_cache = TuneCache(options.tune_cache_dir) if options.tune_cache_dir else None
        # Set by the server when it starts shutting down: readiness turns false at once.
        self.draining = False
        # The frontends give each request a ledger on it (corolla.admission).
        self.memory = (MemoryBudget(options.memory_budget_bytes)
                       if options.memory_budget_bytes > 0 else None)
        # Decoding and inference on the event loop, for plans that run there (corolla.runplan).
        self.loop_runner = LoopRunner()
        # The one load-time hook: every version gets its runner, then its warmup.
        manager.prepare.append(self.in_background(self._prepare_version))

    def in_background(self, hook: Callable[[LoadedVersion], None]
                      ) -> Callable[[LoadedVersion], None]:
        """A load-time hook (tuning, warmup) whose model runs time one thread, as traffic
        does: no solo session while it runs."""

        def run(loaded: LoadedVersion) -> None:
            with self.activity.background():
                hook(loaded)

        return run

    def _prepare_version(self, loaded: LoadedVersion) -> None:
        """Compose a loading version's runner, then warm it up (a loader thread)."""
        loaded.runner = compose_runner(
            loaded.servable, loaded.path, batching=self.options.batching,
            inline_requests=self.options.inline_requests, executor=self._infer,
            loop_runner=self.loop_runner,
            hooks=self._run_hooks(loaded) if self._run_hooks is not None else None,
            name=loaded.name, version=loaded.version, tune_cache=self._tune_cache)
        answer: Answer = functools.partial(self._compute, loaded, loaded.runner)
        loaded.answer = answer if self._wrap_answer is None else self._wrap_answer(loaded, answer)
        if self._warmup is not None:
            self._warmup(loaded)

    def ready(self) -> bool:
        """Server readiness: not draining and every configured model has a version AVAILABLE."""
        return not self.draining and self.manager.all_ready()

    def model_ready(self, name: str) -> bool:
        return not self.draining and self.manager.model_ready(name)

    async def reload_config(self, configs: Sequence[ModelConfig], *,
                            timeout: float | None = None) -> None:
        """TF Serving's ReloadConfig in this process: serve exactly ``configs``; return once
        every model's aspired versions are AVAILABLE, or raise the error of one that failed to
        load (or of a base path that cannot be read); DEADLINE_EXCEEDED past ``timeout``.
        (Other processes of the server: corolla.server's wiring.)"""
        await self.manager.set_configs(configs)
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
        plan = self._runner(loaded).plan
        if plan.batching is not None:
            return plan.batching.max_batch_size
        return (self.options.batching or BatchingOptions()).max_batch_size

    @staticmethod
    def _runner(loaded: LoadedVersion) -> VersionRunner:
        runner = loaded.runner
        if runner is None:  # every version gets one before it is published
            raise Internal(f"model {loaded.name} version {loaded.version} has no runner")
        return runner

    # ---- prediction ----------------------------------------------------------------------

    def deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (timeout if timeout is not None else self.options.default_timeout)

    async def predict(self, spec: ModelSpec, inputs: dict[str, np.ndarray], *,
                      output_filter: Sequence[str] = (), deadline: float | None = None,
                      image_rows: bool = False) -> PredictResult:
        """``image_rows``: encoded images may come in any shape with one image per row
        (``[N]``, ``[N, 1]``, a scalar), as gRPC and KServe V2 carry them; REST's JSON must be
        one image per row already."""
        deadline = deadline if deadline is not None else self.deadline(None)
        self.activity.requests += 1
        try:
            return await self._predict(spec, inputs, output_filter, deadline, image_rows)
        finally:
            self.activity.requests -= 1

    async def _predict(self, spec: ModelSpec, inputs: dict[str, np.ndarray],
                       output_filter: Sequence[str], deadline: float, image_rows: bool
                       ) -> PredictResult:
        with self.lease(spec) as loaded:
            answer = loaded.answer
            if answer is None:  # every version gets one before it is published
                raise Internal(f"model {loaded.name} version {loaded.version} has no runner")
            sig = self._signature(loaded, spec)
            filt = self._output_filter(sig, spec, output_filter)
            if image_rows:
                inputs = one_image_per_row(sig, inputs)
            outputs = await answer(spec.signature, sig, inputs, filt, deadline)
            return PredictResult(name=spec.name, version=loaded.version,
                                 signature_name=spec.signature, outputs=outputs,
                                 metadata=loaded.metadata)

    async def _compute(self, loaded: LoadedVersion, runner: VersionRunner, signature: str,
                       sig: Signature, inputs: dict[str, np.ndarray],
                       filt: tuple[str, ...], deadline: float) -> Tensors:
        """A version's answer: validate and decode the inputs, then run them (its runner)."""
        admitted = runner.admit_early()
        try:
            prepared = await self._prepare_inputs(loaded, sig, inputs, deadline, runner)
            return await runner.run(prepared, signature=signature, output_filter=filt,
                                    deadline=deadline,
                                    splittable=_splittable(sig, prepared, filt),
                                    admitted=admitted)
        finally:
            if admitted:
                runner.leave()

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
                       top_k: int | None = None, deadline: float | None = None,
                       image_rows: bool = False) -> ClassifyResult:
        result = await self.predict(spec, inputs, deadline=deadline, image_rows=image_rows)
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

    async def _prepare_inputs(self, loaded: LoadedVersion, sig: Signature,
                              inputs: dict[str, np.ndarray], deadline: float,
                              runner: VersionRunner) -> Tensors:
        unknown = sorted(set(inputs) - set(sig.inputs))
        if unknown:
            raise InvalidArgument(
                f"input tensor alias not found in signature: {', '.join(unknown)} "
                f"(model {loaded.name} expects {sorted(sig.inputs)})")
        missing = sorted(set(sig.inputs) - set(inputs))
        if missing:
            raise InvalidArgument(
                f"missing input(s) {', '.join(missing)} (model {loaded.name} expects "
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
                    value, pre, inline=runner.plan.decode_on_loop, deadline=deadline,
                    tag=runner.batcher)
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
        # With a memory budget, the decoded tensor is taken for the rest of the request, and
        # each image's decoding memory (from its header) while it decodes.
        ledger = admission.CURRENT.get()
        if ledger is not None:
            await ledger.take(len(flat) * row_bytes, f"{len(flat)} decoded images")
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

        run = submit if ledger is None else admission.metered(ledger, submit, decode_cost)
        if len(flat) == 1:  # the common case: no gather, and a view instead of a copy
            return (await run(0, flat[0]))[np.newaxis]
        return np.stack(await asyncio.gather(*(run(i, d) for i, d in enumerate(flat))))


def _splittable(sig: Signature, inputs: Tensors, output_filter: tuple[str, ...]) -> bool:
    """Whether a request may run as several runs along its first dimension."""
    outputs = [sig.outputs[k] for k in output_filter] if output_filter else sig.outputs.values()
    specs = [*(sig.inputs[k] for k in inputs if k in sig.inputs), *outputs]
    return all(t.batched for t in specs)


def one_image_per_row(sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Encoded images in the shapes gRPC and KServe V2 carry them (``[N]``, ``[N, 1]``, a
    scalar) as ``[N]``, for the inputs that the model declares non-string (the ones decoded as
    images); other inputs unchanged."""
    out = dict(inputs)
    for alias, arr in inputs.items():
        tspec = sig.inputs.get(alias)
        if arr.dtype != object or tspec is None or tspec.dtype == "string":
            continue
        if arr.ndim == 0:
            out[alias] = arr.reshape(1)
        elif arr.ndim >= 2 and all(d == 1 for d in arr.shape[1:]):
            out[alias] = arr.reshape(arr.shape[0])
    return out


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
    if finite and out.dtype.kind == "f" and not np.isfinite(out).all():
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
