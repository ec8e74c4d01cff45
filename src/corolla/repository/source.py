"""The file-system source: which versions of a model ought to be loaded (aspired).

``poll_once`` is stateless and safe to call from a worker thread. A missing or unreadable base
path raises :class:`SourceError` (the manager then keeps what it serves: a flaky mount must not
unload every model); an existing base path with no version directories aspires to nothing.
Non-numeric entries (staging directories, ``.tmp`` names, files) are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from corolla.config import ModelConfig
from corolla.errors import NotFound
from corolla.model_dir import is_version_name


class SourceError(NotFound):
    """The base path could not be listed."""


@dataclass(frozen=True, kw_only=True)
class AspiredVersion:
    version: int
    path: Path


def list_versions(base_path: str) -> dict[int, Path]:
    try:
        entries = list(os.scandir(base_path))
    except FileNotFoundError as exc:
        raise SourceError(f"Could not find base path {base_path}") from exc
    except OSError as exc:
        raise SourceError(f"Could not list base path {base_path}: {exc}") from exc
    out: dict[int, Path] = {}
    for e in entries:
        if is_version_name(e.name):
            try:
                if e.is_dir():
                    out[int(e.name)] = Path(e.path)
            except OSError:
                continue
    return out


def poll_once(config: ModelConfig) -> list[AspiredVersion]:
    found = list_versions(config.base_path)
    return [AspiredVersion(version=v, path=found[v])
            for v in config.version_policy.select(list(found))]
