"""Sources: which versions of a model ought to be loaded (aspired), and from which local path.

A :class:`Source` answers one model's question "what should be served now?" with a
:class:`Listing`: the aspired versions, each with the *local* directory the runtime loads, plus
the versions it has seen but does not offer yet (``pending``: being fetched, or refused with an
error). Where the bytes live is the source's business: :class:`FileSystemSource` reads a base
path on disk; remote stores (``corolla.storage``) download and verify into a local cache first
and then answer exactly the same way, so the manager, the policy and the runtimes never learn
about them.

``poll_once`` is blocking and is called from a worker thread, never two at a time for one
source. A missing or unreadable base path raises :class:`SourceError` (the manager then keeps
what it serves: a flaky mount must not unload every model); an existing base path with no
version directories aspires to nothing. Non-numeric entries (staging directories, ``.tmp``
names, files) are ignored. ``subscribe`` lets a source that hears of changes (a Redis
announcement) ask for a poll at once; polling stays the fallback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from corolla.config import ModelConfig
from corolla.errors import CorollaError, NotFound
from corolla.model_dir import is_version_name


class SourceError(NotFound):
    """The base path could not be listed."""


@dataclass(frozen=True, kw_only=True)
class AspiredVersion:
    version: int
    path: Path


@dataclass(frozen=True, kw_only=True)
class Listing:
    """One poll's answer. ``pending``: version -> None while it is being fetched, or the error
    that keeps it from being offered (incomplete, corrupt, does not fit the cache)."""

    aspired: tuple[AspiredVersion, ...] = ()
    pending: Mapping[int, CorollaError | None] = field(
        default_factory=lambda: MappingProxyType({}))


class Source(Protocol):
    def poll_once(self) -> Listing: ...

    def subscribe(self, notify: Callable[[], None]) -> None:
        """``notify()`` (from any thread) asks for a poll of this source soon."""

    def close(self) -> None: ...


# Builds the source of one model's configuration (the server picks by base path scheme).
SourceFactory = Callable[[ModelConfig], Source]


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


class FileSystemSource:
    """TF Serving's file-system storage path source: the base path's version directories."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def poll_once(self) -> Listing:
        return Listing(aspired=tuple(poll_once(self.config)))

    def subscribe(self, notify: Callable[[], None]) -> None:
        pass  # polling only

    def close(self) -> None:
        pass
