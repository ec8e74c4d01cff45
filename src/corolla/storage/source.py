"""The remote source: lists a store, downloads and verifies into the cache, then offers.

For one model whose base path is a store URI, ``poll_once`` (a worker thread; never two at a
time for one source):

1. lists the store (a failure raises :class:`SourceError`: the manager keeps serving what it
   has; repeated failures back off exponentially up to ``MAX_BACKOFF`` seconds without asking the
   store, and the error shows in status and metrics);
2. decides which listed versions are *complete*: those whose corolla.json manifest the listing
   matches, and those without one (a SavedModel copied with gsutil) once two polls in a row saw
   the same files, sizes and etags;
3. applies the version policy to the complete versions; each selected version that is not in
   the cache yet is downloaded in the background (``fetch_executor``), verified, and renamed
   into the cache; when that finishes the source asks the manager for a poll at once;
4. answers with the aspired versions: the policy applied to the versions that are listed,
   complete and cached, each with its *local* path, so the manager and runtimes see a local
   directory. Versions being fetched or refused (corrupt, incomplete, too big) are ``pending``.
   While none of the versions the policy selects is ready, the previous answer stands (its
   copies stay in the cache), so a replaced or corrupt newest version never leaves the model
   without a version to serve.

A refused copy is not fetched again until its files change in the store (a new fingerprint);
a download that failed because the store was unreachable is retried with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from corolla.config import ModelConfig
from corolla.errors import CorollaError, Internal
from corolla.repository.source import (
    AspiredVersion,
    FileSystemSource,
    Listing,
    Source,
    SourceError,
)
from corolla.storage import transfer
from corolla.storage.base import RemoteVersion, Store, StoreUnavailable, redact
from corolla.storage.cache import COMPLETE, ModelCache
from corolla.storage.stats import StorageStats
from corolla.storage.uri import is_remote, open_store

log = logging.getLogger("corolla.storage")

MAX_BACKOFF = 60.0


@dataclass(kw_only=True)
class _Fetch:
    fingerprint: str
    future: Future[Path] | None = None
    error: CorollaError | None = None
    retry_at: float = 0.0
    failures: int = 0


@dataclass(kw_only=True)
class _Backoff:
    failures: int = 0
    retry_at: float = 0.0
    error: SourceError | None = None

    def fail(self, error: SourceError) -> None:
        self.failures += 1
        self.error = error
        self.retry_at = time.monotonic() + min(MAX_BACKOFF, 2.0 ** (self.failures - 1))

    def ok(self) -> None:
        self.failures, self.error, self.retry_at = 0, None, 0.0


@dataclass(kw_only=True)
class RemoteSource:
    config: ModelConfig
    store: Store
    cache: ModelCache
    fetch_executor: Executor
    stats: StorageStats = field(default_factory=StorageStats)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: dict[int, str] = field(default_factory=dict)  # previous poll's fingerprints
    _plans: dict[tuple[int, str], transfer.Plan] = field(default_factory=dict)
    _fetches: dict[int, _Fetch] = field(default_factory=dict)
    _backoff: _Backoff = field(default_factory=_Backoff)
    _owner: str = field(default_factory=lambda: uuid.uuid4().hex)  # its cache leases' owner
    _offered: dict[int, Path] = field(default_factory=dict)  # the last poll's aspired versions
    _notify: Callable[[], None] | None = None
    _closed: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    def subscribe(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        self.store.watch(notify)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.cache.release(self._owner)
            self.store.close()

    # ---- polling -----------------------------------------------------------------------------

    def poll_once(self) -> Listing:
        with self._lock:
            if self._closed:
                raise SourceError(f"{redact(self.store.uri)}: source closed")
            if self._backoff.error is not None and time.monotonic() < self._backoff.retry_at:
                raise self._backoff.error
            try:
                listed = self.store.list_versions()
            except CorollaError as exc:  # the store's message names it (redacted)
                err = SourceError(exc.message)
                self._backoff.fail(err)
                self.stats.listing(self.name, ok=False)
                raise err from exc
            except Exception as exc:  # a client-library bug: never an empty list
                err = SourceError(f"{redact(self.store.uri)}: listing failed: {exc!r}")
                self._backoff.fail(err)
                self.stats.listing(self.name, ok=False)
                raise err from exc
            self._backoff.ok()
            self.stats.listing(self.name, ok=True)
            return self._offer(listed)

    def _offer(self, listed: dict[int, RemoteVersion]) -> Listing:
        pending: dict[int, CorollaError | None] = {}
        complete: dict[int, transfer.Plan] = {}
        seen, self._seen = self._seen, {v: rv.fingerprint for v, rv in listed.items()}
        for v, rv in listed.items():
            try:
                p = self._plan(rv)
            except StoreUnavailable as exc:
                pending[v] = exc
                continue
            except CorollaError as exc:  # corolla.json promises files that are not there
                pending[v] = exc
                continue
            if p.manifest is None and seen.get(v) != rv.fingerprint:
                pending[v] = None  # no manifest: complete once two polls agree
                continue
            complete[v] = p
        selected = set(self.config.version_policy.select(list(complete)))
        ready: dict[int, Path] = {}
        for v, p in complete.items():
            fp = p.version.fingerprint
            path = self.cache.lookup(self.store.uri, v, fp)
            if path is not None:
                ready[v] = path
                self._fetches.pop(v, None)
            elif v in selected:
                pending[v] = self._fetch(p)
        offered = {v: ready[v] for v in self.config.version_policy.select(list(ready))}
        if selected and not selected & set(ready):
            # Nothing the policy wants is ready yet (being fetched, or refused): keep offering
            # what was offered before while its copy lasts, even if the store no longer lists
            # it (an archive replaced by its next version, a version deleted while its
            # successor downloads): a model is never left with nothing to serve meanwhile.
            kept = {v: p for v, p in self._offered.items() if (p.parent / COMPLETE).exists()}
            offered = kept or offered
        self._offered = offered
        paths = set(offered.values())
        self.cache.hold(self._owner, paths)
        self.cache.prune(self.store.uri, paths | {ready[v] for v in ready if v in selected})
        for v in [v for v in self._fetches if v not in complete]:
            del self._fetches[v]  # gone from the store
        self._plans = {k: p for k, p in self._plans.items() if k[0] in listed}
        return Listing(aspired=tuple(AspiredVersion(version=v, path=path)
                                     for v, path in sorted(offered.items())), pending=pending)

    def _plan(self, rv: RemoteVersion) -> transfer.Plan:
        key = (rv.version, rv.fingerprint)
        p = self._plans.get(key)
        if p is None:
            p = transfer.plan(self.store, rv)
            self._plans[key] = p
        return p

    # ---- fetching ----------------------------------------------------------------------------

    def _fetch(self, p: transfer.Plan) -> CorollaError | None:
        """Start (or report on) the download of a selected version; its pending note."""
        v, fp = p.version.version, p.version.fingerprint
        f = self._fetches.get(v)
        if f is None or f.fingerprint != fp:
            f = self._fetches[v] = _Fetch(fingerprint=fp)
        if f.future is not None and not f.future.done():
            return None
        if f.future is not None:
            exc = f.future.exception()
            f.future = None
            if exc is not None:
                f.error = exc if isinstance(exc, CorollaError) else Internal(
                    f"downloading version {v} failed: {exc!r}")
                f.failures += 1
                transient = isinstance(exc, StoreUnavailable)
                f.retry_at = time.monotonic() + (
                    min(MAX_BACKOFF, 2.0 ** f.failures) if transient else float("inf"))
                log.error("model %s version %d: %s%s", self.name, v, f.error.message,
                          " (retrying)" if transient else
                          " (not loaded; fetched again when its files change)")
        if f.error is not None and time.monotonic() < f.retry_at:
            return f.error
        f.future = self.fetch_executor.submit(self._download, p)
        f.future.add_done_callback(lambda _f: self._poke())
        return None

    def _download(self, p: transfer.Plan) -> Path:
        v, fp = p.version.version, p.version.fingerprint
        start = time.perf_counter()
        moved = [0]
        wrote = [False]  # False: another process had made the copy meanwhile

        def progress(n: int) -> None:
            moved[0] += n

        def write(dest: Path) -> None:
            wrote[0] = True
            transfer.download(self.store, p, dest, progress)

        try:
            path = self.cache.fill(self.store.uri, v, fp, p.size, write)
        except BaseException as exc:
            self.stats.download(self.name, ok=False, nbytes=moved[0], error=exc)
            raise
        if wrote[0]:
            self.stats.download(self.name, ok=True, nbytes=moved[0])
            log.info("model %s version %d: downloaded and verified %d bytes from %s in %.2fs",
                     self.name, v, moved[0], redact(self.store.uri),
                     time.perf_counter() - start)
        return path

    def _poke(self) -> None:
        if self._notify is not None and not self._closed:
            self._notify()


class _BrokenSource:
    """A base path whose store cannot even be opened (a bad URI, a missing extra): every poll
    says why, in status, like a base path that cannot be listed."""

    def __init__(self, error: CorollaError) -> None:
        self.error = error

    def poll_once(self) -> Listing:
        raise SourceError(self.error.message)

    def subscribe(self, notify: Callable[[], None]) -> None:
        pass

    def close(self) -> None:
        pass


class StorageSources:
    """The server's source factory: the local disk as TF Serving does, remote stores through
    the cache. Owns the cache, the download threads and the storage metrics."""

    def __init__(self, cache_dir: str, max_bytes: int = 0, fetch_threads: int = 2) -> None:
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self._cache: ModelCache | None = None
        self.stats = StorageStats()
        self._executor: ThreadPoolExecutor | None = None
        self._fetch_threads = fetch_threads

    @property
    def cache(self) -> ModelCache:
        if self._cache is None:
            self._cache = ModelCache(self.cache_dir, self.max_bytes)
            self.stats.cache = self._cache
        return self._cache

    def __call__(self, config: ModelConfig) -> Source:
        if not is_remote(config.base_path):
            return FileSystemSource(config)
        try:
            cache = self.cache
            store = open_store(config.base_path,
                               state_dir=cache.store_dir(config.base_path) / ".http")
        except CorollaError as exc:
            log.error("model %s: %s", config.name, exc.message)
            return _BrokenSource(exc)
        except OSError as exc:
            log.error("model %s: model cache %s: %s", config.name, self.cache_dir, exc)
            return _BrokenSource(Internal(f"model cache {self.cache_dir}: {exc}"))
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._fetch_threads, thread_name_prefix="fetch")
        return RemoteSource(config=config, store=store, cache=cache,
                            fetch_executor=self._executor, stats=self.stats)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
