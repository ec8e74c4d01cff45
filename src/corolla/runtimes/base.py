"""What every runtime provides: a loader and a servable.

``Runtime.load(path)`` turns a version directory into a :class:`Servable`; it may block (it runs
in a worker thread). ``Servable.predict`` is called from worker threads, possibly concurrently,
with a batch of tensors keyed by signature alias; it must be thread-safe. ``close()`` is called
once, after every in-flight request on the servable has finished.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from corolla.model_dir import ModelMetadata
from corolla.tensors import Tensors


class Servable(Protocol):
    metadata: ModelMetadata

    def predict(
        self, inputs: Tensors, *, signature: str = "serving_default",
        output_filter: tuple[str, ...] = (),
    ) -> Tensors: ...

    def close(self) -> None: ...


@runtime_checkable
class HasSoloStats(Protocol):
    """A servable with a second session for requests served alone (runtimes/onnx.py)."""

    def solo_stats(self) -> dict[str, float | None] | None:
        """Runs it served and its moving averages (None: it has no solo session)."""
        ...


@runtime_checkable
class HasTuningIdentity(Protocol):
    """A servable that can say what its load-time measurements depend on (its graph file and
    how it runs it), so they can be kept across restarts (corolla.tunecache)."""

    def tuning_identity(self) -> str: ...


@runtime_checkable
class HasArenaLimit(Protocol):
    """A servable whose runtime keeps memory between runs (ONNX Runtime's arena) and can be
    told the most rows a run should keep memory for (the run plan's rows)."""

    def limit_arena(self, rows: int) -> None: ...


class Runtime(Protocol):
    platform: str

    def can_load(self, path: Path) -> bool:
        """Whether the version directory holds this runtime's format."""
        ...

    def load(self, path: Path) -> Servable: ...


class Activity:
    """What this process is doing now, for a runtime that can run a request faster on more
    threads when nothing else needs the cores (runtimes/onnx.py's solo session).

    ``requests``: requests the prediction service is serving, changed on the event loop thread
    only. ``background()``: a load-time measurement or warmup in progress (loader threads);
    their timings must not see the extra threads. Worker threads read both without a lock: a
    stale answer costs one run some speed, never its result.
    """

    __slots__ = ("_background", "_lock", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self._background = 0
        self._lock = threading.Lock()

    def alone(self) -> bool:
        """Exactly one request in flight and nothing in the background."""
        return self.requests == 1 and self._background == 0

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        with self._lock:
            self._background += 1
        try:
            yield
        finally:
            with self._lock:
                self._background -= 1
