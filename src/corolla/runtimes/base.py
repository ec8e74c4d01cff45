"""What every runtime provides: a loader and a servable.

``Runtime.load(path)`` turns a version directory into a :class:`Servable`; it may block (it runs
in a worker thread). ``Servable.predict`` is called from worker threads, possibly concurrently,
with a batch of tensors keyed by signature alias; it must be thread-safe. ``close()`` is called
once, after every in-flight request on the servable has finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from corolla.model_dir import ModelMetadata
from corolla.tensors import Tensors


class Servable(Protocol):
    metadata: ModelMetadata

    def predict(
        self, inputs: Tensors, *, signature: str = "serving_default",
        output_filter: tuple[str, ...] = (),
    ) -> Tensors: ...

    def close(self) -> None: ...


class Runtime(Protocol):
    platform: str

    def can_load(self, path: Path) -> bool:
        """Whether the version directory holds this runtime's format."""
        ...

    def load(self, path: Path) -> Servable: ...
