"""Prometheus metrics: one :class:`Metrics` object per server, with its own registry.

Names and labels follow TensorFlow Serving where it has the metric (so its dashboards and alerts
work unchanged), in TF Serving's exposition style: ``/tensorflow/serving/request_count`` becomes
``:tensorflow:serving:request_count``, counters carry no ``_total`` suffix and latencies are
histograms in microseconds with TF Serving's bucket bounds:

- ``:tensorflow:serving:request_count{model_name,status}`` (status: OK, INVALID_ARGUMENT...)
- ``:tensorflow:serving:request_latency{model_name,API,entrypoint}`` (entrypoint REST or GRPC)
- ``:tensorflow:serving:runtime_latency{model_name,API,runtime}`` (one observation per run)
- ``:tensorflow:serving:batching_session:queuing_latency{thread_pool_name}`` (per request)
- ``:tensorflow:serving:batching:processed_batch_size_v2{model_name,op_name,batch_size}``
- ``:tensorflow:serving:model_warmup_latency{model_path,status}``

Corolla's own metrics are ``corolla_*`` (seconds, ``_total`` counters): model load/unload latency
and failures, versions by state, readiness, in-flight requests, batch queue depth and batch
sizes; plus the standard ``process_*`` CPU and memory metrics.

Concurrency: request observations happen on the event loop; runtime latency and warmup in worker
threads (prometheus_client's metrics are thread-safe). Scrape-time gauges read the manager's
state on the event loop, where the route that renders them runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from corolla.errors import CorollaError
from corolla.runtimes.base import HasSoloStats

if TYPE_CHECKING:
    from corolla.admission import MemoryBudget
    from corolla.repository.serving_map import LoadedVersion
    from corolla.service import PredictionService

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TF_METRICS_PATH = "/monitoring/prometheus/metrics"
UNKNOWN_MODEL = "_unknown"


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """TF's ``monitoring::Buckets::Exponential(scale, growth, count)`` upper bounds."""
    return tuple(scale * growth**i for i in range(count))


# TF Serving: "Scale of 10, power of 1.8 with bucket count 33 (~20 minutes)" in microseconds.
LATENCY_US_BUCKETS = exponential_buckets(10, 1.8, 33)
# batching_session queuing_latency: scale 100, power 1.2, 52 buckets (~1 second).
QUEUE_US_BUCKETS = exponential_buckets(100, 1.2, 52)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)


class PlainCounter:
    """A labelled counter exported under its exact name (TF Serving style, no ``_total``)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, labelvalues: tuple[str, ...], amount: float = 1.0) -> None:
        with self._lock:
            self._values[labelvalues] = self._values.get(labelvalues, 0.0) + amount

    def value(self, *labelvalues: str) -> float:
        return self._values.get(tuple(labelvalues), 0.0)

    def collect(self) -> Iterable[Metric]:
        m = Metric(self.name, self.documentation, "counter")
        with self._lock:
            items = list(self._values.items())
        for key, v in items:
            m.add_sample(self.name, dict(zip(self.labelnames, key, strict=True)), v)
        yield m


class Inflight:
    """Requests being served now, per entrypoint; mutated on the event loop thread only."""

    __slots__ = ("grpc", "rest")

    def __init__(self) -> None:
        self.rest = 0
        self.grpc = 0

    @property
    def total(self) -> int:
        return self.rest + self.grpc


# Supplies scrape-time gauge families.
GaugeSource = Callable[[], Iterable[Metric]]


class _Scraped:
    def __init__(self, sources: list[GaugeSource]) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            yield from source()


class Metrics:
    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.request_count = PlainCounter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ("model_name", "status"),
        )
        r.register(self.request_count)
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            buckets=LATENCY_US_BUCKETS,
            registry=r,
        )
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"),
            buckets=LATENCY_US_BUCKETS,
            registry=r,
        )
        self.queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",),
            buckets=QUEUE_US_BUCKETS,
            registry=r,
        )
        self.processed_batch_size = PlainCounter(
            ":tensorflow:serving:batching:processed_batch_size_v2",
            "Tracks the batch size on processing by model_name and op name (if available).",
            ("model_name", "op_name", "batch_size"),
        )
        r.register(self.processed_batch_size)
        self.warmup_latency = Histogram(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ("model_path", "status"),
            buckets=LATENCY_US_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "corolla_batch_size",
            "Rows in each executed batch, padding included.",
            ("model_name",),
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.load_seconds = Histogram(
            "corolla_model_load_seconds",
            "Time to load a model version (each attempt).",
            ("model_name", "result"),
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.load_failures = Counter(
            "corolla_model_load_failures",
            "Failed attempts to load a model version.",
            ("model_name",),
            registry=r,
        )
        self.unload_seconds = Histogram(
            "corolla_model_unload_seconds",
            "Time to unload a model version (waiting for its requests included).",
            ("model_name",),
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.inflight = Inflight()
        self._sources: list[GaugeSource] = [self._inflight_metric]
        r.register(_Scraped(self._sources))
        if process:
            ProcessCollector(registry=r)
        # Label children cached by label values: ``labels()`` costs a lock and validation.
        self._req_children: dict[tuple[str, str, str], Histogram] = {}

    # ---- request path (event loop) ---------------------------------------------------------

    def observe_request(
        self, model: str, api: str, entrypoint: str, status: str, seconds: float
    ) -> None:
        self.request_count.inc((model, status))
        key = (model, api, entrypoint)
        child = self._req_children.get(key)
        if child is None:
            child = self._req_children[key] = self.request_latency.labels(*key)
        child.observe(seconds * 1e6)

    def _inflight_metric(self) -> Iterable[Metric]:
        m = Metric("corolla_inflight_requests", "Requests being served now.", "gauge")
        m.add_sample("corolla_inflight_requests", {"entrypoint": "REST"}, self.inflight.rest)
        m.add_sample("corolla_inflight_requests", {"entrypoint": "GRPC"}, self.inflight.grpc)
        yield m

    def add_source(self, source: GaugeSource) -> None:
        self._sources.append(source)

    # ---- model lifecycle (manager hooks) ---------------------------------------------------

    def on_load(self, name: str, version: int, seconds: float, err: CorollaError | None) -> None:
        self.load_seconds.labels(name, "ok" if err is None else "error").observe(seconds)
        if err is not None:
            self.load_failures.labels(name).inc()

    def on_unload(self, name: str, version: int, seconds: float, err: CorollaError | None) -> None:
        self.unload_seconds.labels(name).observe(seconds)

    def runtime_hook(self, model: str, platform: str) -> Callable[[float], None]:
        """Observes the wall seconds of each model run of a version (its runner calls it)."""
        child = self.runtime_latency.labels(model, "Predict", platform)

        def hook(seconds: float) -> None:
            child.observe(seconds * 1e6)

        return hook

    def batch_hook(self, model: str) -> Callable[[int, list[float]], None]:
        """A ``Batcher.on_batch`` hook: batch size and each request's queueing time."""
        queue = self.queuing_latency.labels(model)
        sizes = self.batch_size.labels(model)

        def hook(size: int, waits: list[float]) -> None:
            sizes.observe(size)
            self.processed_batch_size.inc((model, "batch", str(size)))
            for w in waits:
                queue.observe(w * 1e6)

        return hook

    def render(self) -> bytes:
        return render(self.registry)

    def families(self) -> list[Family]:
        return families(self.registry)

    # ---- wiring ----------------------------------------------------------------------------

    def instrument(self, service: PredictionService) -> None:
        """Install the manager's load/unload hooks and the scrape-time gauges of a
        PredictionService. (A version's runtime and batch observers: corolla.server.)"""
        manager = service.manager
        manager.on_load.append(self.on_load)
        manager.on_unload.append(self.on_unload)
        self.add_source(lambda: _model_gauges(service))
        memory = service.memory
        if memory is not None:
            self.add_source(lambda: _memory_metrics(memory))


def _memory_metrics(memory: MemoryBudget) -> Iterable[Metric]:
    """The request memory budget (corolla.admission): its size, use, waits and refusals."""
    stats = memory.stats
    budget = Metric("corolla_memory_budget_bytes",
                    "Memory that requests may hold in flight (--memory_budget_mib).", "gauge")
    budget.add_sample("corolla_memory_budget_bytes", {}, memory.limit)
    in_use = Metric("corolla_memory_in_use_bytes",
                    "Memory that requests in flight hold now, of the budget.", "gauge")
    in_use.add_sample("corolla_memory_in_use_bytes", {}, stats.in_use)
    waits = Metric("corolla_memory_waits",
                   "Requests that waited for memory of the budget.", "counter")
    waits.add_sample("corolla_memory_waits_total", {}, stats.waits)
    refusals = Metric("corolla_memory_refusals",
                      "Requests refused for memory: busy (the budget stayed full for the whole "
                      "wait: 503/UNAVAILABLE) or too_large (more than the budget: 413).",
                      "counter")
    refusals.add_sample("corolla_memory_refusals_total", {"reason": "busy"}, stats.busy)
    refusals.add_sample("corolla_memory_refusals_total", {"reason": "too_large"},
                        stats.too_large)
    return [budget, in_use, waits, refusals]


def _add_solo_stats(solo_runs: Metric, alone_ms: Metric, name: str,
                    loaded: LoadedVersion) -> None:
    """A version's solo-session samples (runtimes/onnx.py), where it has a solo session."""
    servable = loaded.servable
    stats = servable.solo_stats() if isinstance(servable, HasSoloStats) else None
    if not stats:
        return
    labels = {"model_name": name, "version": str(loaded.version)}
    solo_runs.add_sample("corolla_onnx_solo_runs_total", labels, stats["runs"] or 0.0)
    for session in ("main", "solo"):
        value = stats[f"{session}_ms_per_row"]
        if value is not None:
            alone_ms.add_sample("corolla_onnx_alone_ms_per_row", {**labels, "session": session},
                                value)


def _model_gauges(service: PredictionService) -> Iterable[Metric]:
    manager = service.manager
    versions = Metric("corolla_model_versions", "Model versions by state.", "gauge")
    ready = Metric(
        "corolla_model_ready",
        "1 when the model has an AVAILABLE version and the server is not draining.",
        "gauge",
    )
    depth = Metric(
        "corolla_batch_queue_depth",
        "Requests waiting in the batch queues of the model's versions.",
        "gauge",
    )
    solo_runs = Metric(
        "corolla_onnx_solo_runs",
        "Model runs served by the ONNX solo session (a request served alone; "
        "--onnx_solo_threads).",
        "counter",
    )
    alone_ms = Metric(
        "corolla_onnx_alone_ms_per_row",
        "Moving average of the wall milliseconds per row of runs served alone, by ONNX "
        "session (main, solo): a run alone takes the solo session while it is at most 0.9 "
        "of the main one.",
        "gauge",
    )
    for name in manager.model_names():
        counts: dict[str, int] = {}
        for st in manager.statuses(name):
            counts[st.state.name] = counts.get(st.state.name, 0) + 1
        for state in ("START", "LOADING", "AVAILABLE", "UNLOADING", "END"):
            versions.add_sample(
                "corolla_model_versions", {"model_name": name, "state": state}, counts.get(state, 0)
            )
        ready.add_sample(
            "corolla_model_ready", {"model_name": name}, 1 if service.model_ready(name) else 0
        )
        entry = manager.serving_map.models.get(name)
        total = 0
        for loaded in entry.versions.values() if entry is not None else ():
            total += loaded.runner.queue_depth if loaded.runner is not None else 0
            _add_solo_stats(solo_runs, alone_ms, name, loaded)
        depth.add_sample("corolla_batch_queue_depth", {"model_name": name}, total)
    server = Metric(
        "corolla_server_ready",
        "1 when every configured model is AVAILABLE and the server is not draining.",
        "gauge",
    )
    server.add_sample("corolla_server_ready", {}, 1 if service.ready() else 0)
    draining = Metric("corolla_server_draining", "1 once shutdown has begun.", "gauge")
    draining.add_sample("corolla_server_draining", {}, 1 if service.draining else 0)
    return [versions, ready, depth, solo_runs, alone_ms, server, draining]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


# One metric family as plain data (picklable, for REST workers): name, help, type, samples.
Sample = tuple[str, tuple[tuple[str, str], ...], float]
Family = tuple[str, str, str, list[Sample]]

# Gauges that add up across processes; other gauges (model state, readiness) are the main
# process's. Counters and histograms always add up.
SUMMED_GAUGES = frozenset({
    "corolla_inflight_requests", "corolla_batch_queue_depth",
    "corolla_memory_budget_bytes", "corolla_memory_in_use_bytes",
    "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds",
})


def families(registry: CollectorRegistry) -> list[Family]:
    out: list[Family] = []
    for metric in registry.collect():
        created = metric.name + "_created"
        samples = [(s.name, tuple((k, str(v)) for k, v in s.labels.items()), float(s.value))
                   for s in metric.samples
                   if s.name != created and s.name != metric.name + "_total_created"]
        out.append((metric.name, metric.documentation, metric.type, samples))
    return out


def merge_families(parts: Sequence[Sequence[Family]]) -> list[Family]:
    """Several processes' families as one server's: sums where sums mean something (counters,
    histograms, in-flight and memory gauges), otherwise the first process's value."""
    merged: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for part in parts:
        for name, doc, mtype, samples in part:
            entry = merged.setdefault(name, (doc, mtype, {}))
            values = entry[2]
            add = mtype in ("counter", "histogram", "summary", "gaugehistogram") or \
                name in SUMMED_GAUGES
            for sname, labels, value in samples:
                key = (sname, labels)
                if add:
                    values[key] = values.get(key, 0.0) + value
                else:
                    values.setdefault(key, value)
    return [(name, doc, mtype, [(k[0], k[1], v) for k, v in values.items()])
            for name, (doc, mtype, values) in merged.items()]


def render(registry: CollectorRegistry) -> bytes:
    return render_families(families(registry))


def render_families(fams: Sequence[Family]) -> bytes:
    """Prometheus text format 0.0.4, keeping counter sample names as the collectors give them.

    prometheus_client's own writer renames every counter family to ``<name>_total``; TF
    Serving's counters have no suffix, so this writer names a family after its samples.
    """
    out: list[str] = []
    for name, doc, mtype, samples in fams:
        if mtype == "counter" and any(s[0] == name + "_total" for s in samples):
            name += "_total"
        elif mtype == "unknown":
            mtype = "untyped"
        doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {mtype}\n")
        for sname, labels, value in samples:
            if labels:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                out.append(f"{sname}{{{text}}} {floatToGoString(value)}\n")
            else:
                out.append(f"{sname} {floatToGoString(value)}\n")
    return "".join(out).encode("utf-8")


def parse_monitoring_config(text: str, source: str = "monitoring config") -> tuple[bool, str]:
    """TF Serving's MonitoringConfig text format: (prometheus enabled, its path)."""
    from google.protobuf import text_format

    from corolla.errors import InvalidArgument
    from corolla.protos.gen.tensorflow_serving.config import monitoring_config_pb2

    msg = monitoring_config_pb2.MonitoringConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise InvalidArgument(f"{source}: {exc}") from exc
    cfg = msg.prometheus_config
    path = cfg.path or TF_METRICS_PATH
    if not path.startswith("/"):
        raise InvalidArgument(f"{source}: prometheus_config.path must start with '/'")
    return bool(cfg.enable), path
