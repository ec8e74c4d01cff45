"""ONNX Runtime backend (the default). onnxruntime is imported only here.

A version directory holds ``model.onnx`` and, normally, ``corolla.json``. A bare ``model.onnx``
without metadata is served too: its signature is read from the graph (no labels, no image
preprocessing). ``InferenceSession.run`` releases the GIL and is safe to call from several
threads at once.

Solo session. A server runs one inference per core side by side, each on one ONNX Runtime
thread: two threads per run would put two on every core, spinning against each other. A lone
request then uses one core and leaves the others idle. With ``solo_threads`` > 1 a version also
gets a second session with that many intra-op threads, used for a run while the process serves
that one request and nothing else (:class:`corolla.runtimes.base.Activity`), as long as its
runs are measured faster than the main session's (:class:`SoloChoice`). Its threads do
not spin while they wait: with spinning (ONNX Runtime's default, even with
``session.force_spinning_stop`` or a 100 µs ``spin_duration_us``) some server runs on 2 cores
doubled the CPU per request and slowed it by 2-4 ms, probably a spinning thread holding the
core that its partner or the server's other threads needed. Measured at concurrency 1 in
docs/operations.md. It costs a second copy of the weights and of the run's working memory. It
is built in a background thread once the main session exists (the version turns AVAILABLE
without waiting for it; runs alone take the main session until it is there).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corolla.errors import CorollaError, FailedPrecondition, Internal, InvalidArgument
from corolla.model_dir import (
    AUTO_VARIANT,
    METADATA_FILE,
    ONNX_FILE,
    ModelMetadata,
    Signature,
    TensorSpec,
    read_metadata,
)
from corolla.runtimes.base import Activity
from corolla.tensors import ONNX_DTYPES, Tensors, batch_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class OnnxOptions:
    # 0: ONNX Runtime's default (one per core); None: chosen for this machine
    # (corolla.options.ServerOptions.resolved).
    intra_op_threads: int | None = 0
    inter_op_threads: int = 1
    graph_optimization: str = "all"  # all | extended | basic | disabled
    # Intra-op threads of the solo session (module docstring); 0 or 1: no solo session;
    # None: chosen for this machine.
    solo_threads: int | None = 0
    # Which of a version's graph variants to serve (corolla.model_dir): "auto" serves the
    # version's default graph, a name (fp32, int8) that variant.
    graph_variant: str = AUTO_VARIANT


def _spec_from_node(node: Any) -> TensorSpec:
    dtype = ONNX_DTYPES.get(node.type)
    if dtype is None:
        raise FailedPrecondition(f"ONNX tensor {node.name!r} has unsupported type {node.type}")
    shape = tuple(d if isinstance(d, int) else -1 for d in node.shape) if node.shape else ()
    return TensorSpec(name=node.name, dtype=dtype, shape=shape)


def signature_from_session(session: Any) -> Signature:
    return Signature(
        inputs={n.name: _spec_from_node(n) for n in session.get_inputs()},
        outputs={n.name: _spec_from_node(n) for n in session.get_outputs()},
    )


def _session(graph: Path, options: OnnxOptions, intra_op_threads: int, *, spin: bool = True
             ) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    if not spin:
        # The pool's threads sleep instead of spinning while they wait (module docstring).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[options.graph_optimization]
    try:
        return ort.InferenceSession(str(graph), sess_options=so,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise FailedPrecondition(f"could not load ONNX graph {graph}: {exc}") from exc


@functools.cache
def _shrink_options() -> Any:
    """Run options under which a run gives what it added to the CPU memory arena back at its
    end (ONNX Runtime's ``memory.enable_memory_arena_shrinkage``)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class SoloChoice:
    """Which session a run alone takes, by measurement: the solo session while its runs take
    at most MARGIN of the main session's wall time per row (both measured alone), else the
    main one. Now and then a run alone takes the other session (a probe), so both measurements
    stay current: on a 2-core machine the two-thread session was, for stretches of time and for
    no reason found, slower than one thread (docs/operations.md). Probes come every PROBE-th
    run alone; each probe that would not have been chosen doubles the interval, up to
    MAX_PROBE, and one that would have been resets it: a solo session that keeps losing costs
    its extra CPU on one run in MAX_PROBE instead of one in PROBE, and a change is still
    noticed at the next probe. Called from the thread of a run alone; two runs alone at once
    are rare and only blur the averages."""

    PROBE = 8
    MAX_PROBE = 128
    MARGIN = 0.9
    ALPHA = 0.2  # weight of a new measurement in the moving averages

    __slots__ = ("_interval", "_runs", "main_ms", "solo_ms")

    def __init__(self) -> None:
        self.solo_ms: float | None = None
        self.main_ms: float | None = None
        self._runs = 0  # runs alone since the last probe
        self._interval = self.PROBE

    def prefers_solo(self) -> bool:
        if self.solo_ms is None or self.main_ms is None:
            return True
        return self._solo_wins(self.solo_ms, self.main_ms)

    @classmethod
    def _solo_wins(cls, solo_ms: float, main_ms: float) -> bool:
        return solo_ms <= cls.MARGIN * main_ms

    @property
    def probe_interval(self) -> int:
        return self._interval

    def pick(self) -> bool:
        """True: this run alone takes the solo session."""
        if self.solo_ms is None:
            return True
        if self.main_ms is None:
            return False
        best = self.prefers_solo()
        self._runs += 1
        if self._runs >= self._interval:
            self._runs = 0
            return not best
        return best

    def record(self, solo: bool, ms_per_row: float) -> None:
        if self.solo_ms is not None and self.main_ms is not None:
            best = self.prefers_solo()
            if solo != best:  # a probe: would this run have won?
                won = (self._solo_wins(ms_per_row, self.main_ms) if solo
                       else not self._solo_wins(self.solo_ms, ms_per_row))
                self._interval = (self.PROBE if won
                                  else min(self.MAX_PROBE, 2 * self._interval))
        prev = self.solo_ms if solo else self.main_ms
        value = ms_per_row if prev is None else prev + self.ALPHA * (ms_per_row - prev)
        if solo:
            self.solo_ms = value
        else:
            self.main_ms = value


class OnnxServable:
    def __init__(self, path: Path, options: OnnxOptions, activity: Activity | None = None
                 ) -> None:
        import onnxruntime as ort

        if hasattr(ort, "disable_telemetry_events"):
            ort.disable_telemetry_events()  # a server must not phone home
        has_metadata = (path / METADATA_FILE).exists()
        metadata = read_metadata(path) if has_metadata else None
        file = metadata.graph_file(options.graph_variant) if metadata else ONNX_FILE
        graph = path / file
        self._graph, self._options = graph, options
        # The variant served, for logs and status: its name where the version names variants.
        self.graph_variant = next(
            (k for k, v in (metadata.graph_variants if metadata else {}).items() if v == file),
            None)
        if metadata is not None and metadata.graph_variants:
            log.info("%s: serving graph variant %s (%s; variants %s)", path, self.graph_variant,
                     file, ", ".join(sorted(metadata.graph_variants)))
        # None (chosen by ServerOptions.resolved, which always ran for a server): the default.
        intra, solo = options.intra_op_threads or 0, options.solo_threads or 0
        self._session = _session(graph, options, intra)
        # A solo session only where runs are narrower than it (0 threads: already every core).
        self._solo: Any = None
        self._choice: SoloChoice | None = None
        self._solo_runs = 0  # runs the solo session served (solo_stats, for the metrics)
        self._stats_lock = threading.Lock()
        self._activity = activity
        self._closed = False
        # ONNX Runtime's memory arena keeps what its largest run took, for the session's life
        # (a 32-row run of the flowers model leaves ~500 MB held). limit_arena() says how many
        # rows a run may keep memory for; larger runs give theirs back when they end.
        self._keep_rows: int | None = None
        self._shrink_next: set[int] = set()  # ids of sessions whose next run gives back
        # Set once the solo session is built (or will not be): it is built in the background,
        # so the version is ready sooner; until then every run takes the main session.
        self.solo_ready = threading.Event()
        if activity is not None and solo > 1 and 0 < intra < solo:
            threading.Thread(target=self._build_solo, args=(graph, options, path),
                             name="onnx-solo", daemon=True).start()
        else:
            self.solo_ready.set()
        graph_sig = signature_from_session(self._session)
        if metadata is None:
            metadata = ModelMetadata(signatures={"serving_default": graph_sig})
        else:
            self._check_metadata(metadata, graph_sig)
        self.metadata = metadata
        # alias -> graph tensor name, per signature
        self._inputs = {k: {a: t.name for a, t in s.inputs.items()}
                        for k, s in metadata.signatures.items()}  # fmt: skip
        self._outputs = {k: {a: t.name for a, t in s.outputs.items()}
                         for k, s in metadata.signatures.items()}  # fmt: skip

    @staticmethod
    def _check_metadata(metadata: ModelMetadata, graph_sig: Signature) -> None:
        graph_in = {t.name for t in graph_sig.inputs.values()}
        graph_out = {t.name for t in graph_sig.outputs.values()}
        for sig_name, sig in metadata.signatures.items():
            for alias, spec in sig.inputs.items():
                if spec.name not in graph_in:
                    raise FailedPrecondition(
                        f"signature {sig_name!r} input {alias!r} names tensor {spec.name!r}, "
                        f"which the ONNX graph does not have (it has {sorted(graph_in)})")
            for alias, spec in sig.outputs.items():
                if spec.name not in graph_out:
                    raise FailedPrecondition(
                        f"signature {sig_name!r} output {alias!r} names tensor {spec.name!r}, "
                        f"which the ONNX graph does not have (it has {sorted(graph_out)})")

    def predict(
        self, inputs: Tensors, *, signature: str = "serving_default",
        output_filter: tuple[str, ...] = (),
    ) -> Tensors:
        in_names, out_names = self._inputs[signature], self._outputs[signature]
        aliases = list(output_filter) if output_filter else list(out_names)
        feed = {in_names[a]: v for a, v in inputs.items()}
        activity = self._activity
        # Set only for a run alone: it picks the session and learns from the run's time.
        choice = self._choice if activity is not None and activity.alone() else None
        use_solo = choice is not None and choice.pick()
        session = self._solo if use_solo else self._session
        rows = batch_rows(inputs)
        shrink = (self._keep_rows is not None and rows > self._keep_rows) or (
            id(session) in self._shrink_next)
        try:
            start = time.perf_counter()
            results = session.run([out_names[a] for a in aliases], feed,
                                   _shrink_options() if shrink else None)
            if shrink:
                self._shrink_next.discard(id(session))
            if choice is not None:
                choice.record(use_solo, 1000 * (time.perf_counter() - start) / max(1, rows))
                if use_solo:
                    with self._stats_lock:
                        self._solo_runs += 1
        except Exception as exc:
            msg = str(exc)
            if "INVALID_ARGUMENT" in msg or "Invalid" in msg:
                raise InvalidArgument(f"the model rejected the input: {msg}") from exc
            raise Internal(f"inference failed: {msg}") from exc
        return {a: np.asarray(r) for a, r in zip(aliases, results, strict=True)}

    def limit_arena(self, rows: int) -> None:
        """Runs of up to ``rows`` rows keep their memory in the arena for the next run; a
        larger run (the load-time batch measurements, a request that is not split) gives back
        what it took beyond that when it ends, and so does the next run of each session now,
        for what was taken before this call."""
        self._keep_rows = max(1, rows)
        self._shrink_next = {id(s) for s in (self._session, self._solo) if s is not None}

    def _build_solo(self, graph: Path, options: OnnxOptions, path: Path) -> None:
        try:
            solo = _session(graph, options, options.solo_threads or 0, spin=False)
        except CorollaError as exc:
            log.warning("%s: no solo session (%s); runs alone take the main session", path,
                        exc.message)
            solo = None
        try:
            with self._stats_lock:
                if solo is None or self._closed:
                    return
                self._solo = solo
                self._choice = SoloChoice()  # after _solo: a run that sees a choice has both
            log.info("%s: solo session with %d threads for a request served alone "
                     "(--onnx_solo_threads)", path, options.solo_threads)
        finally:
            self.solo_ready.set()

    def close(self) -> None:
        # Dropping the sessions frees their memory; ONNX Runtime has no explicit close.
        with self._stats_lock:
            self._closed = True
            self._solo = None
            self._choice = None
        self._session = None

    def tuning_identity(self) -> str:
        """The graph file and how it runs: what load-time measurements depend on."""
        from corolla.tunecache import file_identity

        o = self._options
        return (f"onnx:{file_identity(self._graph)}:intra={o.intra_op_threads}:"
                f"inter={o.inter_op_threads}:opt={o.graph_optimization}")

    @property
    def has_solo_session(self) -> bool:
        return self._solo is not None

    def solo_stats(self) -> dict[str, float | None] | None:
        """For the metrics: the runs the solo session served and the moving averages of wall
        ms per row of runs served alone on each session (None until measured); None where
        this version has no solo session."""
        choice = self._choice
        if self._solo is None or choice is None:
            return None
        return {"runs": float(self._solo_runs), "main_ms_per_row": choice.main_ms,
                "solo_ms_per_row": choice.solo_ms}


class OnnxRuntime:
    platform = "onnx"

    def __init__(self, options: OnnxOptions | None = None, activity: Activity | None = None
                 ) -> None:
        """``activity``: what the process is doing (the prediction service's), which decides
        when a version's solo session runs; without it there is none."""
        self.options = options or OnnxOptions()
        self.activity = activity

    def can_load(self, path: Path) -> bool:
        """An ONNX graph is there, and corolla.json (if any) does not name another platform."""
        if (path / METADATA_FILE).exists():
            try:
                md = read_metadata(path)
            except Exception:
                return (path / ONNX_FILE).exists()
            # A variant missing from the version is the load's error (a clear message), not
            # "no runtime recognises it".
            return md.platform == "onnx" and (path / md.graph).exists()
        return (path / ONNX_FILE).exists()

    def load(self, path: Path) -> OnnxServable:
        return OnnxServable(path, self.options, self.activity)
