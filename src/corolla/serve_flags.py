"""The flags of ``corolla serve``: TensorFlow Serving's (same names and meanings), then Corolla's.

This module only declares them on an ``argparse`` parser (:func:`add_serve_arguments`);
:mod:`corolla.serve_options` turns the parsed namespace into ``ServerOptions``, and
:mod:`corolla.cli` is what reads argv. Flags of one subsystem that it owns are declared there
(``admission.add_flags``, ``http.limits.add_flags``, ``storage.flags``) and added here.
"""

from __future__ import annotations

import argparse
from typing import Any

from corolla import admission

# TF Serving flags that have no meaning here: accepted (so existing command lines keep
# working) and reported as ignored.
IGNORED_TF_FLAGS = (
    "grpc_socket_path", "rest_api_num_threads", "num_load_threads", "num_unload_threads",
    "flush_filesystem_caches", "tensorflow_session_parallelism",
    "tensorflow_session_config_file", "use_alts_credentials", "platform_config_file",
    "per_process_gpu_memory_fraction", "grpc_channel_arguments", "grpc_max_threads",
    "remove_unused_fields_from_bundle_metagraph",
    "prefer_tflite_model", "num_tflite_pools", "num_tflite_interpreters_per_pool",
    "enable_signature_method_name_check", "xla_cpu_compilation_enabled", "enable_profiler",
    "thread_pool_factory_config_file", "mixed_precision", "skip_initialize_tpu",
    "enable_per_model_batching_parameters", "allow_version_labels_for_unavailable_models",
)  # fmt: skip


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "t", "yes", "y", "on"):
        return True
    if v in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    b: dict[str, Any] = {"nargs": "?", "const": True, "type": parse_bool, "metavar": "BOOL"}
    g = p.add_argument_group("TensorFlow Serving flags")
    g.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    g.add_argument("--rest_api_port", type=int, default=None,
                   help="REST port (default: $PORT when set, as Cloud Run, Knative and Heroku "
                        "set it, else 8501; 0 picks a free port). Given explicitly, it wins "
                        "over $PORT")
    g.add_argument("--model_name", default=None, help="name of the single model to serve")
    g.add_argument("--model_base_path", default=None,
                   help="base path of the single model (holds numbered version directories)")
    g.add_argument("--model_config_file", default=None,
                   help="ModelServerConfig in text format (models.config)")
    g.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                   help="re-read the config file this often (0: never)")
    g.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="look for new versions this often (default 1; 0: only at start)")
    g.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                   help="request deadline in milliseconds (REST, and gRPC calls without a "
                        "deadline of their own): 504 / DEADLINE_EXCEEDED past it (default 30000)")
    g.add_argument("--rest_api_enable_cors_support", default=False, **b,
                   help="answer CORS preflights and allow every origin (default false)")
    g.add_argument("--enable_batching", default=True, **b,
                   help="dynamic batching, where it saves CPU (default true, unlike TF "
                        "Serving; --enable_batching=false turns it off)")
    g.add_argument("--batching_parameters_file", default=None,
                   help="BatchingParameters in text format: TF Serving's batching, as configured")
    g.add_argument("--max_num_load_retries", type=int, default=5,
                   help="retries of a version that fails to load (default 5)")
    g.add_argument("--load_retry_interval_micros", type=int, default=60_000_000,
                   help="wait between load retries, in microseconds (default 60000000)")
    g.add_argument("--version", dest="print_version", action="store_true",
                   help="print the version and exit")
    g.add_argument("--monitoring_config_file", default=None,
                   help="MonitoringConfig in text format: prometheus_config { enable: true "
                        "path: ... } serves metrics at that path (default "
                        "/monitoring/prometheus/metrics)")
    g.add_argument("--ssl_config_file", default=None,
                   help="SSLConfig in text format (PEM contents inline) for the gRPC port")
    g.add_argument("--enable_model_warmup", default=True, **b,
                   help="before a version turns AVAILABLE, run each new ONNX version once and "
                        "replay a SavedModel's assets.extra/tf_serving_warmup_requests")
    g.add_argument("--num_request_iterations_for_warmup", type=int, default=1,
                   help="times each warmup request runs (default 1)")
    g.add_argument("--saved_model_tags", default="serve",
                   help="comma-separated tags of the SavedModel MetaGraph to load (default serve)")
    g.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="TensorFlow threads per op (default 0: one per core)")
    g.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="TensorFlow ops run side by side (default 0: TensorFlow decides)")
    for flag in IGNORED_TF_FLAGS:
        g.add_argument(f"--{flag}", default=None, help=argparse.SUPPRESS)
    c = p.add_argument_group("Corolla flags")
    c.add_argument("--host", default="0.0.0.0", help="address the REST and gRPC APIs bind to")
    c.add_argument("--grpc_host", default=None, help="address the gRPC API binds to (--host)")
    c.add_argument("--model_platform", default="", choices=["", "onnx", "tensorflow"],
                   help="platform of --model_name (default: detect per version)")
    c.add_argument("--version_policy_mode", default="availability_preserving",
                   choices=["availability_preserving", "resource_preserving"],
                   help="availability_preserving: load a new version before unloading the old "
                        "(default); resource_preserving: unload first, for tight memory")
    c.add_argument("--max_image_pixels", type=int, default=40_000_000,
                   help="images with more pixels are refused with 400 before they are decoded "
                        "(JPEGs, decoded downscaled, may have twice as many; default 40000000)")
    admission.add_flags(c)
    c.add_argument("--onnx_intra_op_threads", type=int, default=0,
                   help="ONNX Runtime threads per inference (0: chosen for this machine)")
    c.add_argument("--onnx_solo_threads", type=int, default=0,
                   help="ONNX Runtime threads for a request the process serves alone, in a "
                        "second session per version (0: the process's cores when inferences "
                        "run on one thread each; 1: no second session)")
    c.add_argument("--onnx_graph_variant", default="auto", help="which graph to serve of a "
                   "version that names several (fp32, int8...); auto: the version's default "
                   "(the embedded model: int8)")
    c.add_argument("--batch_dispatch", default="eager", choices=["eager", "timeout"],
                   help="eager: an idle batch thread takes the open batch at once; "
                        "timeout: TF Serving's wait for a full batch or the timeout")
    c.add_argument("--cors_allowed_origins", default="",
                   help="comma-separated origins allowed by CORS (implies CORS support)")
    c.add_argument("--shutdown_grace_seconds", type=float, default=0.0,
                   help="after SIGTERM, keep accepting this long while readiness is false")
    c.add_argument("--drain_timeout_seconds", type=float, default=30.0,
                   help="after the listeners close, wait this long for in-flight requests")
    c.add_argument("--access_log", default=False, **b,
                   help="log one line per request (default false)")
    c.add_argument("--log_level", default="INFO",
                   help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    c.add_argument("--cpus", default=None,
                   help="CPUs to size thread pools for (2, 1.5, 500m; rounded up), e.g. the "
                        "pod's CPU request; sets COROLLA_CPUS for the server and its workers. "
                        "Only lowers what the affinity mask and CPU limit allow (default: "
                        "$COROLLA_CPUS, else those)")
    c.add_argument("--rest_workers", type=int, default=1,
                   help="processes serving the REST and gRPC APIs, sharing their ports "
                        "(default 1). More help when the server's own work, not inference, "
                        "fills a core: cheap models at high request rates, or image models at "
                        "high concurrency. Each process loads every model; a gRPC channel (one "
                        "connection) stays on one process")
    c.add_argument("--rest_worker_watchdog_seconds", type=float, default=30.0,
                   help="with --rest_workers: a worker process whose event loop has not run "
                        "for this long (hung, or stopped) is killed and restarted; 0: never "
                        "(default 30)")
    c.add_argument("--inline_requests", default="auto", choices=["auto", "true", "false"],
                   help="run whole requests (decode and inference, in batches where batching "
                        "saves CPU) on the event loop instead of in threads; auto: where a "
                        "process has one core (the cores divided by --rest_workers, rounded "
                        "down, is 1, or a one-CPU container); applies to models whose inference "
                        "(of a whole batch) takes at most 25 ms")
    o = p.add_argument_group("Corolla operations and security flags (docs/operations.md)")
    o.add_argument("--log_format", default="text", choices=["text", "json"],
                   help="json: one JSON object per log line, with request ids (default text)")
    o.add_argument("--enable_metrics", default=True, **b,
                   help="Prometheus metrics at /metrics on the REST port (default true)")
    o.add_argument("--enable_web_ui", default=True, **b,
                   help="the web page at / on the REST port (default true; docs/web-ui.md)")
    from corolla.http.limits import add_flags as add_limit_flags

    add_limit_flags(o)  # body, header and connection limits, slow clients
    o.add_argument("--api_keys_file", default=None,
                   help="API keys, one per line, optionally followed by the models they may "
                        "call; re-read when it changes")
    o.add_argument("--api_keys_env", default="COROLLA_API_KEYS",
                   help="environment variable with comma-separated API keys for every model "
                        "(default COROLLA_API_KEYS; used when set and non-empty)")
    o.add_argument("--auth_open_endpoints", default="health",
                   help="endpoints that need no API key: comma-separated from health, "
                        "metrics; or none (default health)")
    o.add_argument("--ssl_certfile", default=None, help="PEM certificate: TLS on REST and gRPC")
    o.add_argument("--ssl_keyfile", default=None, help="PEM private key of --ssl_certfile")
    o.add_argument("--ssl_ca_certs", default=None,
                   help="PEM CA bundle for client certificates")
    o.add_argument("--ssl_client_verify", default=False, **b,
                   help="require client certificates signed by --ssl_ca_certs (mutual TLS)")
    from corolla.storage.flags import add_storage_arguments

    add_storage_arguments(o)  # --model_cache_*, --prediction_cache* (docs/storage.md)
    o.add_argument("--tuning_cache_dir", default=None, help="batch-size measurements per model "
                   "file and machine, kept for restarts (default $XDG_CACHE_HOME/corolla/tuning;"
                   " empty: measure at every load)")
    o.add_argument("--allowed_model_roots", default="",
                   help="comma-separated directories that every model base path and version "
                        "directory must resolve into")
