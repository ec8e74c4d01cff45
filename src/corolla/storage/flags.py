"""``corolla serve`` flags for model stores and the prediction cache, and the server options
they make (kept here so that cli.py only dispatches to them)."""

from __future__ import annotations

import argparse
from typing import Any

from corolla.errors import CorollaError


def add_storage_arguments(group: Any) -> None:
    group.add_argument(
        "--model_cache_dir", default="",
        help="where versions from s3://, gs://, http(s):// and redis:// base paths are "
             "downloaded and verified before they load (default $XDG_CACHE_HOME/corolla/models)")
    group.add_argument(
        "--model_cache_max_bytes", type=int, default=0,
        help="bound of --model_cache_dir: unused versions are evicted, a version that still "
             "does not fit is refused (0: no bound but the disk)")
    group.add_argument(
        "--prediction_cache", default="",
        help="cache answers of deterministic models by their inputs: memory[:MiB], "
             "redis://host:port[/db], rediss://... or memcached://host:port (default off)")
    group.add_argument("--prediction_cache_ttl_seconds", type=float, default=300.0,
                       help="how long a cached answer lives (default 300)")
    group.add_argument("--prediction_cache_timeout_ms", type=float, default=50.0,
                       help="a cache slower than this is skipped and the model answers "
                            "(default 50)")


def storage_options(args: argparse.Namespace, models: list[Any]) -> dict[str, Any]:
    """ServerOptions fields; a store or cache whose client is missing fails here, in one
    line naming the extra."""
    from corolla.storage.uri import is_remote, require_client

    for m in models:
        if is_remote(m.base_path):
            require_client(m.base_path)
    if args.model_cache_max_bytes < 0:
        raise CorollaError("--model_cache_max_bytes must be 0 (no bound) or more")
    return {"model_cache_dir": args.model_cache_dir,
            "model_cache_max_bytes": args.model_cache_max_bytes,
            "prediction_cache": _prediction_cache(args)}


def _prediction_cache(args: argparse.Namespace) -> Any:
    if not args.prediction_cache:
        return None
    from corolla.prediction_cache import PredictionCacheOptions, open_backend

    if args.prediction_cache_ttl_seconds <= 0 or args.prediction_cache_timeout_ms <= 0:
        raise CorollaError("--prediction_cache_ttl_seconds and --prediction_cache_timeout_ms "
                           "must be positive")
    options = PredictionCacheOptions(url=args.prediction_cache,
                                     ttl_seconds=args.prediction_cache_ttl_seconds,
                                     timeout_seconds=args.prediction_cache_timeout_ms / 1000)
    open_backend(options).close()  # a bad URL or a missing client: at start
    return options
