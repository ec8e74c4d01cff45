"""Command line: the only module that reads argv and the environment.

``corolla serve`` takes TensorFlow Serving's flags with their names and meanings
(``--port``, ``--rest_api_port``, ``--model_name``, ``--model_base_path``,
``--model_config_file``...), in ``--flag=value`` or ``--flag value`` form; so does a bare
``corolla --model_name=...`` (as ``tensorflow_model_server`` is called). The tensorflow/serving
image's environment (``MODEL_NAME``, ``MODEL_BASE_PATH``) works too. With no model flags it
serves the embedded default model. Unknown flags and broken config files fail at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from corolla import __version__, admission
from corolla.cpus import CPUS_ENV, available_cpus, detected_cpus, parse_cpus
from corolla.errors import CorollaError

log = logging.getLogger("corolla")

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


def default_model_base_path() -> str:
    return str(resources.files("corolla") / "default_model" / "flowers")


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


def build_server_options(args: argparse.Namespace, env: dict[str, str]) -> object:
    from corolla.batching import BatchingOptions, parse_batching_parameters
    from corolla.config import ModelConfig, load_model_config_file, resolve_base_path
    from corolla.images import ImageLimits
    from corolla.repository.manager import ManagerOptions
    from corolla.runtimes.onnx import OnnxOptions
    from corolla.runtimes.tensorflow import TensorflowOptions
    from corolla.server import ServerOptions

    for flag in IGNORED_TF_FLAGS:
        if getattr(args, flag, None) is not None:
            log.warning("--%s is a TensorFlow Serving flag that Corolla ignores", flag)
    if args.model_config_file and (args.model_name or args.model_base_path):
        raise CorollaError("use either --model_config_file or --model_name/--model_base_path")
    models: list[ModelConfig]
    if args.model_config_file:
        models = load_model_config_file(args.model_config_file)
    else:
        name = args.model_name or env.get("MODEL_NAME")
        base = args.model_base_path
        if base is None and env.get("MODEL_NAME") and not args.model_name:
            base = os.path.join(env.get("MODEL_BASE_PATH", "/models"), env["MODEL_NAME"])
        if name is None and base is None:
            name, base = "flowers", default_model_base_path()
            log.info("no model given: serving the embedded default model %s", base)
        elif base is None:
            raise CorollaError(f"--model_name={name} needs --model_base_path")
        models = [ModelConfig(name=name or "default", base_path=resolve_base_path(base),
                              platform=args.model_platform)]
    if args.rest_workers < 1:
        raise CorollaError("--rest_workers must be at least 1")
    from corolla.workers import MIN_WATCHDOG

    watchdog = args.rest_worker_watchdog_seconds
    if not (watchdog == 0 or (math.isfinite(watchdog) and watchdog >= MIN_WATCHDOG)):
        raise CorollaError(f"--rest_worker_watchdog_seconds must be 0 (off) or at least "
                           f"{MIN_WATCHDOG:g} (workers beat every second), got {watchdog}")
    if args.max_decoded_image_mib < 1:
        raise CorollaError("--max_decoded_image_mib must be at least 1")
    batching = None
    if args.enable_batching:
        if args.batching_parameters_file:
            try:
                text = Path(args.batching_parameters_file).read_text()
            except OSError as exc:
                raise CorollaError(f"cannot read --batching_parameters_file: {exc}") from exc
            batching = parse_batching_parameters(text)
        else:
            # Measured at load, one batch thread per core (ServerOptions.resolved).
            batching = BatchingOptions(eager=args.batch_dispatch == "eager", autotune=True)
    origins = tuple(o.strip() for o in args.cors_allowed_origins.split(",") if o.strip())
    ops = _ops_options(args, env, models)
    return ServerOptions(
        host=args.host, grpc_host=args.grpc_host, rest_api_port=rest_api_port(args, env),
        grpc_port=args.port,
        models=tuple(models), model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        rest_api_enable_cors_support=args.rest_api_enable_cors_support,
        cors_allowed_origins=origins, batching=batching,
        onnx=OnnxOptions(intra_op_threads=args.onnx_intra_op_threads or None,
                         solo_threads=args.onnx_solo_threads or None,
                         graph_variant=args.onnx_graph_variant or "auto"),
        tensorflow=TensorflowOptions(
            intra_op_parallelism=args.tensorflow_intra_op_parallelism,
            inter_op_parallelism=args.tensorflow_inter_op_parallelism,
            saved_model_tags=tuple(t.strip() for t in args.saved_model_tags.split(",")
                                   if t.strip()),
            enable_model_warmup=args.enable_model_warmup,
            warmup_iterations=max(1, args.num_request_iterations_for_warmup)),
        manager=ManagerOptions(policy=args.version_policy_mode,
                               max_load_retries=args.max_num_load_retries,
                               load_retry_interval=args.load_retry_interval_micros / 1e6),
        image_limits=ImageLimits(max_pixels=args.max_image_pixels),
        max_decoded_image_bytes=args.max_decoded_image_mib * 1024 * 1024,
        memory_budget_bytes=admission.budget_from_flags(args, args.rest_workers),
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        drain_timeout_seconds=args.drain_timeout_seconds,
        access_log=args.access_log,
        rest_workers=args.rest_workers, log_level=args.log_level, log_format=args.log_format,
        worker_watchdog_seconds=args.rest_worker_watchdog_seconds,
        inline_requests={"true": True, "false": False}.get(args.inline_requests),
        **ops,
        enable_fake_runtime=env.get("COROLLA_ENABLE_FAKE_RUNTIME") == "1",
    ).resolved(available_cpus())


def rest_api_port(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """--rest_api_port when given, else $PORT (the platform's port) when set, else 8501."""
    port = args.rest_api_port
    source = "--rest_api_port"
    if port is None and env.get("PORT", "").strip():
        source = f"$PORT={env['PORT']!r}"
        try:
            port = int(env["PORT"])
        except ValueError:
            raise CorollaError(f"{source} is not a port number") from None
        if not 0 < port < 65536:
            raise CorollaError(f"{source} is not a port number (1-65535)")
        log.info("REST API port %d from $PORT", port)
    if port is None:
        return 8501
    if port != 0 and port == args.port:
        raise CorollaError(f"REST port {port} ({source}) is the gRPC port (--port); where the "
                           "platform's $PORT is for gRPC, give --rest_api_port explicitly")
    return int(port)


def apply_cpus(args: argparse.Namespace, environ: MutableMapping[str, str]) -> None:
    """--cpus sets COROLLA_CPUS (for this process and its workers); a bad value is refused."""
    if args.cpus is not None:
        environ[CPUS_ENV] = args.cpus
    given = environ.get(CPUS_ENV, "").strip()
    if given:
        try:
            parse_cpus(given)
        except ValueError as exc:
            raise CorollaError(f"--cpus / ${CPUS_ENV}: {exc}") from None
    log.info("sizing thread pools for %d CPU(s) (detected %d%s)", available_cpus(),
             detected_cpus(), f", {CPUS_ENV}={given}" if given else "")


def _ops_options(args: argparse.Namespace, env: dict[str, str], models: list[Any]
                 ) -> dict[str, Any]:
    """ServerOptions fields for metrics, limits, auth, TLS, warmup and model roots."""
    from corolla.http.limits import limits_from_flags
    from corolla.metrics import parse_monitoring_config
    from corolla.storage.flags import storage_options
    from corolla.tls import load_ssl_config_file, load_tls_files
    from corolla.tunecache import default_tune_cache_dir
    from corolla.warmup import WarmupOptions

    metrics_paths = ["/metrics"] if args.enable_metrics else []
    if args.monitoring_config_file:
        try:
            text = Path(args.monitoring_config_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CorollaError(f"cannot read --monitoring_config_file: {exc}") from exc
        enabled, path = parse_monitoring_config(text, args.monitoring_config_file)
        if enabled:
            metrics_paths.append(path)
    open_endpoints = {e.strip() for e in args.auth_open_endpoints.split(",") if e.strip()}
    if unknown := open_endpoints - {"health", "metrics", "none"}:
        raise CorollaError(f"--auth_open_endpoints: unknown {sorted(unknown)} "
                           "(health, metrics, none)")
    env_keys = tuple(k.strip() for k in env.get(args.api_keys_env, "").split(",") if k.strip())
    if args.ssl_keyfile and not args.ssl_certfile:
        raise CorollaError("--ssl_keyfile needs --ssl_certfile")
    if args.ssl_client_verify and not args.ssl_ca_certs:
        raise CorollaError("--ssl_client_verify needs --ssl_ca_certs")
    rest_tls = None
    if args.ssl_certfile:
        rest_tls = load_tls_files(args.ssl_certfile, args.ssl_keyfile or args.ssl_certfile,
                                  args.ssl_ca_certs, args.ssl_client_verify)
    grpc_tls = load_ssl_config_file(args.ssl_config_file) if args.ssl_config_file else rest_tls
    if roots := tuple(r.strip() for r in args.allowed_model_roots.split(",") if r.strip()):
        from corolla.confine import check_configs
        from corolla.server import default_cache_dir
        check_configs(models, roots, args.model_cache_dir or default_cache_dir())
    if args.api_keys_file and not os.path.isfile(args.api_keys_file):
        raise CorollaError(f"--api_keys_file {args.api_keys_file} does not exist")
    return {
        "metrics_paths": tuple(metrics_paths),
        "web_ui": args.enable_web_ui,
        "http_limits": limits_from_flags(args),
        "auth_keys_file": args.api_keys_file,
        "auth_keys": env_keys,
        "auth_open_health": "health" in open_endpoints,
        "auth_open_metrics": "metrics" in open_endpoints,
        "rest_tls": rest_tls,
        "grpc_tls": grpc_tls,
        "warmup": WarmupOptions(enabled=args.enable_model_warmup,
                                iterations=max(1, args.num_request_iterations_for_warmup)),
        "allowed_model_roots": roots,
        **storage_options(args, models),
        "tune_cache_dir": (default_tune_cache_dir() if args.tuning_cache_dir is None
                           else args.tuning_cache_dir),
    }


def cmd_serve(args: argparse.Namespace) -> int:
    if args.print_version:
        print(f"corolla {__version__}")
        return 0
    from corolla.logging_setup import configure_logging
    from corolla.server import ListenError, ServerOptions, serve

    configure_logging(args.log_level, args.log_format)
    try:
        apply_cpus(args, os.environ)
        options = build_server_options(args, dict(os.environ))
    except CorollaError as exc:
        print(f"corolla serve: error: {exc.message}", file=sys.stderr)
        return 2
    assert isinstance(options, ServerOptions)
    try:
        import uvloop
    except ImportError:
        run: Callable[[Any], int] = asyncio.run
    else:
        run = uvloop.run
    try:
        return run(serve(options))
    except ListenError as exc:
        print(f"corolla serve: error: {exc}", file=sys.stderr)
        return 1


def cmd_demo_model(args: argparse.Namespace) -> int:
    from corolla.demo_model import write_demo_version

    path = write_demo_version(args.base_path, args.version, args.size)
    print(path)
    return 0


# What `corolla --help` and `corolla serve --help` say: written for users (the module docstring
# above is for whoever reads this file).
DESCRIPTION = """\
Train image classifiers and serve them as a drop-in replacement for TensorFlow Serving:
its REST and gRPC APIs, flags and model directories, plus KServe V2."""
EPILOG = """\
examples:
  corolla serve              serve the embedded flowers model: REST on :8501, gRPC on :8500
  corolla serve --model_name=mine --model_base_path=models/mine
                             serve a model directory of your own (models/mine/1/, 2/, ...)
  corolla train photos --output models/mine
                             train on photos/<class>/*.jpg, publish models/mine/<n>/
  corolla predict flowers photo.jpg
                             ask a running server for the top labels of a photo

'corolla COMMAND --help' shows a command's options. Flags alone ('corolla --port=8500 ...')
mean 'corolla serve', as tensorflow_model_server is called.
"""
SERVE_DESCRIPTION = (
    "Serve models over TensorFlow Serving's REST API (default port 8501, or $PORT when set) "
    "and gRPC API (default port 8500), with KServe V2 on both ports. Flags have TF Serving's "
    "names and take --flag=value or --flag value; the tensorflow/serving image's MODEL_NAME and "
    "MODEL_BASE_PATH environment variables work too. With no model flags, the embedded flowers "
    "model is served. Unknown flags and broken config files fail at once.")
DEMO_DESCRIPTION = (
    "Write a tiny real classifier, which names the dominant colour of a photo (red, green, "
    "blue, white, black), as the next version under BASE_PATH: a model to serve in a minute, "
    "without training.")


# Modules that add more commands (each has register(subparsers)).
COMMAND_MODULES = ("corolla.training.cli", "corolla.client_cli", "corolla.convert_cli",
                   "corolla.storage.cli")


def build_parser(*, serve_only: bool = False) -> argparse.ArgumentParser:
    """``serve_only``: without COMMAND_MODULES (their imports cost a starting server ~0.3 s)."""
    parser = argparse.ArgumentParser(prog="corolla", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", action="version", version=f"corolla {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve models (TensorFlow Serving compatible)",
                           description=SERVE_DESCRIPTION,
                           usage="corolla serve [--flag=value ...]")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    demo = sub.add_parser("make-demo-model",
                          help="write the small colour classifier as a version under BASE_PATH",
                          description=DEMO_DESCRIPTION)
    demo.add_argument("base_path", metavar="BASE_PATH",
                      help="model base path (created if missing), e.g. models/demo")
    demo.add_argument("--version", type=int, default=None,
                      help="version number (default: one above the highest in BASE_PATH)")
    demo.add_argument("--size", type=int, default=64,
                      help="input height and width in pixels (default 64)")
    demo.set_defaults(func=cmd_demo_model)
    for module in () if serve_only else COMMAND_MODULES:
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not argv or (argv[0].startswith("--") and argv[0] not in ("--help", "-h")):
        argv = ["serve", *argv]  # tensorflow_model_server style: flags only
    parser = build_parser(serve_only=argv[0] == "serve")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except CorollaError as exc:
        print(f"corolla {args.command}: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
