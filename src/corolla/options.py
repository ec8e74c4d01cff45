"""The server's settings: one frozen dataclass that the CLI fills from its flags.

Everything here is plain configuration; :mod:`corolla.server` builds the objects from it.
Settings that depend on the machine (thread counts, whether requests run on the event loop)
are decided in one place, :meth:`ServerOptions.resolved`, from the CPUs the process may use
(corolla.cpus.available_cpus) and the number of processes (``--rest_workers``); the CLI only
translates flags, leaving "choose for this machine" as ``None``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from corolla.batching import BatchingOptions
from corolla.config import ModelConfig
from corolla.http.limits import HttpLimits
from corolla.images import ImageLimits
from corolla.prediction_cache import PredictionCacheOptions
from corolla.repository.manager import ManagerOptions
from corolla.runtimes.base import Runtime
from corolla.runtimes.onnx import OnnxOptions
from corolla.runtimes.tensorflow import TensorflowOptions
from corolla.service import MAX_DECODED_IMAGE_BYTES, ServiceOptions
from corolla.tls import TlsFiles
from corolla.warmup import WarmupOptions


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    host: str = "0.0.0.0"
    grpc_host: str | None = None  # None: --host
    rest_api_port: int = 8501
    grpc_port: int = 8500
    models: tuple[ModelConfig, ...] = ()
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    cors_allowed_origins: tuple[str, ...] = ()
    batching: BatchingOptions | None = field(default_factory=BatchingOptions)
    onnx: OnnxOptions = field(default_factory=OnnxOptions)
    tensorflow: TensorflowOptions = field(default_factory=TensorflowOptions)
    manager: ManagerOptions = field(default_factory=ManagerOptions)
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    # Model input that one request's encoded images may decode to (corolla.service).
    max_decoded_image_bytes: int = MAX_DECODED_IMAGE_BYTES
    # Memory that requests may hold in flight in each process (corolla.admission); 0: off.
    memory_budget_bytes: int = 0
    decode_threads: int = 0  # 0: one per core of the process
    infer_threads: int = 0  # unbatched inference; 0: one per core of the process
    # Versions loading side by side; 0: one per core of the process (at least two: a slow
    # one must not hold up the rest; ten models are ready in about the time one core takes
    # for five).
    load_threads: int = 0
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    shutdown_grace_seconds: float = 0.0
    drain_timeout_seconds: float = 30.0
    access_log: bool = False
    enable_fake_runtime: bool = False  # tests only
    # Operations and security (docs/operations.md).
    metrics_paths: tuple[str, ...] = ("/metrics",)  # () turns the metrics endpoint off
    web_ui: bool = True  # the page at GET / (corolla.http.webui)
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    auth_keys_file: str | None = None
    auth_keys: tuple[str, ...] = ()  # keys for every model (from the environment)
    auth_open_health: bool = True
    auth_open_metrics: bool = False
    auth_reload_seconds: float = 2.0
    rest_tls: TlsFiles | None = None
    grpc_tls: TlsFiles | None = None
    warmup: WarmupOptions = field(default_factory=WarmupOptions)
    allowed_model_roots: tuple[str, ...] = ()
    # Remote base paths (corolla.storage): verified copies are kept here, bounded (0: no bound).
    model_cache_dir: str = ""
    model_cache_max_bytes: int = 0
    # Answers of deterministic versions, keyed by their inputs (corolla.prediction_cache).
    prediction_cache: PredictionCacheOptions | None = None
    # Load-time batch-size measurements per model file and machine (corolla.tunecache); "": none.
    tune_cache_dir: str = ""
    runtimes_extra: tuple[Runtime, ...] = ()
    # Processes serving the REST and gRPC APIs on their ports (corolla.workers); 1: this
    # process only.
    rest_workers: int = 1
    # A worker whose event loop has not run for this long is killed and restarted; 0: never.
    worker_watchdog_seconds: float = 30.0
    # Whole requests of cheap unbatched models on the event loop (corolla.service).
    # None: where a process has one core (the CLI's --inline_requests=auto).
    inline_requests: bool | None = False
    log_level: str = "INFO"  # for the worker processes' logging
    log_format: str = "text"

    def service_options(self) -> ServiceOptions:
        """The prediction service's share of these settings."""
        return ServiceOptions(batching=self.batching, image_limits=self.image_limits,
                              default_timeout=self.rest_api_timeout_in_ms / 1000,
                              max_decoded_image_bytes=self.max_decoded_image_bytes,
                              inline_requests=bool(self.inline_requests),
                              tune_cache_dir=self.tune_cache_dir,
                              memory_budget_bytes=self.memory_budget_bytes)


    def resolved(self, cpus: int, machine_cpus: int | None = None) -> ServerOptions:
        """These options with every machine-dependent setting decided, for ``cpus`` usable
        CPUs (``machine_cpus``: the machine's, os.cpu_count()). Resolving resolved options
        changes nothing.

        - The cores of each process: ``cpus`` shared among the ``rest_workers`` processes.
        - Corolla's default batching (``autotune``) runs one batch thread per core; a
          parameters file's ``num_batch_threads`` stands.
        - Decode threads and unbatched inference threads: one per core, unless set; load
          threads one per core, at least two.
        - ``inline_requests`` None: on where a process has one core.
        - ONNX Runtime threads (``None``: choose): see :func:`onnx_intra_threads`; the solo
          session gets the process's cores where inferences run on one thread each.
        """
        cores = max(1, cpus // max(1, self.rest_workers))
        batching = self.batching
        if batching is not None and batching.autotune:
            batching = replace(batching, num_batch_threads=cores)
        intra = self.onnx.intra_op_threads
        if intra is None:
            intra = onnx_intra_threads(batching, cores, cpus, machine_cpus or os.cpu_count() or 1)
        solo = self.onnx.solo_threads
        if solo is None:
            solo = cores if intra == 1 else 1
        return replace(
            self, batching=batching,
            onnx=replace(self.onnx, intra_op_threads=intra, solo_threads=solo),
            decode_threads=self.decode_threads or cores,
            load_threads=self.load_threads or max(2, cores),
            infer_threads=self.infer_threads or (
                batching.num_batch_threads if batching is not None else cores),
            inline_requests=(cores == 1 if self.inline_requests is None
                             else self.inline_requests))


def onnx_intra_threads(batching: BatchingOptions | None, cores: int, cpus: int,
                       machine_cpus: int) -> int:
    """ONNX Runtime threads per inference: one when inferences already run side by side.

    Batch threads (or, without batching, the inference pool: one thread per core) run one
    inference per core; giving each its own intra-op pool too would put two threads on every
    core, spinning against each other. Otherwise the process's own cores, counted explicitly
    unless the process may use the whole machine (0: ONNX Runtime's default): that default
    counts the machine's cores, not the affinity mask or the container's CPU quota. (Measured
    on this 2-core machine, pinned to one core with taskset, tutorial CNN, raw uploads at
    concurrency 32: 251 req/s with two ONNX Runtime threads, 362 with one;
    benchmarks/results/2026-11-27-inline-one-core.md.)
    """
    threads = batching.num_batch_threads if batching is not None else cores
    if threads > 1:
        return 1
    return 0 if cores == cpus == machine_cpus else cores


def default_cache_dir() -> str:
    """Where remote versions are cached without --model_cache_dir."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "corolla", "models")
