"""The server's settings: one frozen dataclass that the CLI fills from its flags.

Everything here is plain configuration; :mod:`corolla.server` builds the objects from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

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
    decode_threads: int = 0  # 0: one per core
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
    inline_requests: bool = False
    log_level: str = "INFO"  # for the worker processes' logging
    log_format: str = "text"

    def service_options(self) -> ServiceOptions:
        """The prediction service's share of these settings."""
        return ServiceOptions(batching=self.batching, image_limits=self.image_limits,
                              default_timeout=self.rest_api_timeout_in_ms / 1000,
                              max_decoded_image_bytes=self.max_decoded_image_bytes,
                              inline_requests=self.inline_requests,
                              tune_cache_dir=self.tune_cache_dir,
                              memory_budget_bytes=self.memory_budget_bytes)


def default_cache_dir() -> str:
    """Where remote versions are cached without --model_cache_dir."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "corolla", "models")
