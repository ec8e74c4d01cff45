"""From the parsed ``corolla serve`` flags and the environment to ``ServerOptions``.

Checks that the flags agree with each other and with the files they name (config files, TLS
material, API keys, model roots), and fails at once with a :class:`CorollaError` that says
which flag is wrong. The environment comes in as a mapping (:mod:`corolla.cli` passes
``os.environ``): TF Serving's ``MODEL_NAME``/``MODEL_BASE_PATH``, the platform's ``$PORT``,
``COROLLA_CPUS`` and the API keys variable. Heavy modules are imported inside the functions, so
that ``corolla --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Mapping, MutableMapping
from importlib import resources
from pathlib import Path
from typing import Any

from corolla import admission
from corolla.cpus import CPUS_ENV, available_cpus, detected_cpus, parse_cpus
from corolla.errors import CorollaError
from corolla.serve_flags import IGNORED_TF_FLAGS

log = logging.getLogger("corolla")


def default_model_base_path() -> str:
    return str(resources.files("corolla") / "default_model" / "flowers")


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
