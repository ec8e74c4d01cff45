"""The serving map: an immutable snapshot of what can serve requests, and request leases.

The manager publishes a new :class:`ServingMap` by a single assignment whenever a version turns
AVAILABLE or starts unloading; readers take whatever map is current, without locks. A request
holds a :class:`LoadedVersion` lease for its duration; unloading waits until every lease is
returned (quiescing). Leases are taken and returned on the event loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from corolla.errors import InvalidArgument, NotFound
from corolla.model_dir import ModelMetadata
from corolla.runtimes.base import Servable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import numpy as np

    from corolla.model_dir import Signature
    from corolla.runner import VersionRunner

    # (signature name, signature, inputs, output aliases, deadline) -> output tensors
    Answer = Callable[[str, Signature, dict[str, np.ndarray], tuple[str, ...], float],
                      Awaitable[dict[str, np.ndarray]]]


class LoadedVersion:
    def __init__(self, *, name: str, version: int, path: Path, servable: Servable,
                 platform: str) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.servable = servable
        self.platform = platform
        self.metadata: ModelMetadata = servable.metadata
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # How requests run on this version (corolla.runner), composed at load time by the
        # prediction service's prepare hook, before the version is published.
        self.runner: VersionRunner | None = None
        # The version's answer to one request, composed at load time too: the service's
        # computation, or that wrapped in the prediction cache (corolla.prediction_cache).
        self.answer: Answer | None = None

    @property
    def inflight(self) -> int:
        return self._inflight

    def acquire(self) -> LoadedVersion:
        self._inflight += 1
        self._idle.clear()
        return self

    def release(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def quiesce(self) -> None:
        await self._idle.wait()

    def __enter__(self) -> LoadedVersion:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def describe_request(name: str, version: int | None, label: str | None) -> str:
    if version is not None:
        return f"Specific({name}, {version})"
    if label is not None:
        return f"Label({name}, {label})"
    return f"Latest({name})"


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    name: str
    versions: Mapping[int, LoadedVersion]
    labels: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingMap:
    models: Mapping[str, ModelEntry] = field(default_factory=lambda: MappingProxyType({}))

    def find(self, name: str, version: int | None = None, label: str | None = None
             ) -> LoadedVersion:
        if version is not None and label is not None:
            raise InvalidArgument("Both version and version_label are set; use at most one")
        entry = self.models.get(name)
        if entry is None or not entry.versions:
            raise NotFound(
                f"Servable not found for request: {describe_request(name, version, label)}")
        if label is not None:
            if label not in entry.labels:
                # INVALID_ARGUMENT, as TF Serving's ServerCore::GetModelVersionForLabel answers.
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            version = entry.labels[label]
        if version is None:
            return entry.versions[max(entry.versions)]
        found = entry.versions.get(version)
        if found is None:
            raise NotFound(
                f"Servable not found for request: {describe_request(name, version, None)}")
        return found

    def lease(self, name: str, version: int | None = None, label: str | None = None
              ) -> LoadedVersion:
        """Find a version and take a lease on it; use as a context manager."""
        return self.find(name, version, label).acquire()
