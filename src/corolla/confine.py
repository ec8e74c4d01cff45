"""Confinement of model files to allowed root directories (``--allowed_model_roots``).

With roots configured, every model base path (from flags, the config file, its reloads, or
gRPC's HandleReloadConfigRequest) and every version directory must lie under one of them after
``..`` and symbolic links are resolved; anything else is PERMISSION_DENIED. Checked when a
configuration is accepted (start, config-file reload) and again by :class:`ConfinedRuntime`
right before a version is read, which covers every path into the manager, including symlinked
version directories. Model names never become paths (config rejects separators), and names in
URLs only look up the serving map.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from corolla.errors import PermissionDenied


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(path))


def is_within(path: str | os.PathLike[str], roots: Iterable[str]) -> bool:
    real = _real(path)
    for root in roots:
        r = _real(root)
        if real == r or real.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def check_path(path: str | os.PathLike[str], roots: Sequence[str], what: str) -> None:
    if not is_within(path, roots):
        raise PermissionDenied(
            f"{what} {os.fspath(path)} (resolved: {_real(path)}) is outside the allowed model "
            f"roots {list(roots)}"
        )


def check_configs(
    configs: Iterable[Any], roots: Sequence[str], cache_dir: str | None = None
) -> None:
    """Every local base path within ``roots``. A store URI (``s3://``...) is no path: its
    versions load from the model cache, so ``cache_dir`` (when given) must be within the roots;
    :class:`ConfinedRuntime` checks each cached version directory again when it loads."""
    from corolla.storage.uri import is_remote

    for c in configs:
        if is_remote(c.base_path):
            if cache_dir is not None:
                check_path(cache_dir, roots, f"model {c.name}: --model_cache_dir (where "
                           f"{c.base_path} is downloaded)")  # fmt: skip
            continue
        check_path(c.base_path, roots, f"model {c.name}: base_path")


class ConfinedRuntime:
    """A runtime that refuses to read version directories outside the roots."""

    def __init__(self, inner: Any, roots: Sequence[str]) -> None:
        self.inner = inner
        self.roots = tuple(roots)
        self.platform = inner.platform

    def can_load(self, path: Path) -> bool:
        # Outside the roots: claim it, so that load() reports why instead of "unrecognised".
        return not is_within(path, self.roots) or bool(self.inner.can_load(path))

    def load(self, path: Path) -> Any:
        check_path(path, self.roots, "version directory")
        return self.inner.load(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
