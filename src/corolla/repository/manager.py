"""The manager: makes loaded versions follow the aspired versions, one action at a time.

Each model has one worker task and one source (``corolla.repository.source``; a new one when
its base path changes). ``set_configs`` and ``poll`` update the aspired versions and
wake the workers; a worker asks the policy for the next action and runs it, until the policy has
nothing left to do. Loads and unloads run in a thread pool, never on the event loop. Failed loads
are retried (``max_load_retries`` times, ``load_retry_interval`` apart) and then reported as END
with their error; a failed version never displaces a working one (the policy sees to that).
Once loaded and still aspired, a version is never unloaded. The aspired versions are what the
source lists now (TF Serving): a version whose directory disappeared is unloaded once another is
AVAILABLE, and versions that ended and are no longer aspired leave the status, failed ones too.
A version the source now offers from another directory is reloaded (see the policy's *stale*).

All state is mutated on the event loop thread. ``serving_map`` is replaced, never mutated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from corolla.config import ModelConfig
from corolla.errors import CorollaError, Internal, Unavailable
from corolla.repository.policy import POLICIES, Action, PolicyName, State, VersionSnapshot
from corolla.repository.runtime_choice import runtime_for
from corolla.repository.serving_map import LoadedVersion, ModelEntry, ServingMap
from corolla.repository.source import (
    AspiredVersion,
    FileSystemSource,
    Listing,
    Source,
    SourceFactory,
)
from corolla.runtimes.base import Runtime, Servable

log = logging.getLogger("corolla.manager")


@dataclass(kw_only=True)
class VersionRecord:
    version: int
    path: Path
    state: State = State.START
    aspired: bool = True
    failed: bool = False
    error: CorollaError | None = None
    loaded: LoadedVersion | None = None
    # The directory the source offers now, when it differs from the loaded one's.
    next_path: Path | None = None
    reload_failed: bool = False  # loading next_path failed: keep serving ``path``


@dataclass(kw_only=True)
class ModelRecord:
    config: ModelConfig
    source: Source
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    pending: dict[int, CorollaError | None] = field(default_factory=dict)
    source_error: str | None = None
    polled: bool = False  # the source has answered at least once
    poll_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    removed: bool = False


@dataclass(frozen=True, kw_only=True)
class VersionStatus:
    version: int
    state: State
    error: CorollaError | None
    # A problem that does not stop this version serving (its source cannot be read): shown as
    # the status message beside error_code OK, as TF Serving clients check the code.
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class ManagerOptions:
    policy: PolicyName = "availability_preserving"
    max_load_retries: int = 5
    load_retry_interval: float = 60.0
    unload_drain_timeout: float = 30.0


# Hooks called with (model, version, seconds, error) after each load and unload.
LoadHook = Callable[[str, int, float, CorollaError | None], None]
# Called on the worker thread after a servable loads, before it turns AVAILABLE (warmup).
PrepareHook = Callable[[LoadedVersion], None]


class Manager:
    def __init__(self, *, runtimes: Sequence[Runtime], executor: Executor,
                 options: ManagerOptions | None = None,
                 source_factory: SourceFactory = FileSystemSource) -> None:
        self._runtimes = {r.platform: r for r in runtimes}
        self._source_factory = source_factory
        self._executor = executor
        self.options = options or ManagerOptions()
        self._policy = POLICIES[self.options.policy]
        self._models: dict[str, ModelRecord] = {}
        self.serving_map = ServingMap()
        self._changed = asyncio.Condition()
        self.on_load: list[LoadHook] = []
        self.on_unload: list[LoadHook] = []
        self.prepare: list[PrepareHook] = []

    # ---- configuration and polling -------------------------------------------------------

    @property
    def configs(self) -> list[ModelConfig]:
        return [m.config for m in self._models.values() if not m.removed]

    async def set_configs(self, configs: Sequence[ModelConfig]) -> None:
        """Serve exactly these models: add new ones, update changed ones, unload removed ones."""
        wanted = {c.name: c for c in configs}
        for name, record in list(self._models.items()):
            if name not in wanted and not record.removed:
                record.removed = True
                self._set_aspired(record, [])
                record.wake.set()  # even with nothing to unload, the worker must end
        for name, cfg in wanted.items():
            old = self._models.get(name)
            if old is None or old.removed:
                if old is not None and old.worker is not None:
                    await old.worker  # finish unloading the old incarnation first
                record = ModelRecord(config=cfg, source=self._new_source(cfg))
                self._models[name] = record
                record.worker = asyncio.create_task(self._work(record), name=f"manage-{name}")
            elif old.config != cfg:
                if (old.config.base_path, old.config.version_policy) != (
                        cfg.base_path, cfg.version_policy):
                    # A new source; what it offers replaces what is served, availability-
                    # preserving (a version it offers from another directory is reloaded).
                    if old.config.base_path != cfg.base_path:  # (URIs may hold secrets)
                        log.info("model %s: base path changed: its versions come from the new "
                                 "one once they load", name)
                    self._close_source(old.source)
                    old.source = self._new_source(cfg)
                    old.polled, old.pending = False, {}
                old.config = cfg
        self._publish()  # labels may have moved
        await self.poll()

    def _new_source(self, config: ModelConfig) -> Source:
        source = self._source_factory(config)
        loop = asyncio.get_running_loop()
        name = config.name

        def notify() -> None:  # from any thread: poll this model soon
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.poll([name])))

        source.subscribe(notify)
        return source

    @staticmethod
    def _close_source(source: Source) -> None:
        """Close a source in a worker thread (it may join a thread or a connection)."""
        asyncio.get_running_loop().run_in_executor(None, source.close).add_done_callback(
            lambda f: None if f.exception() is None else log.error(
                "closing a source failed: %r", f.exception()))

    async def poll(self, names: Sequence[str] | None = None) -> None:
        """Ask the sources (of every model, or of ``names``) once, in worker threads, and apply
        the answers."""
        records = [r for n, r in self._models.items()
                   if not r.removed and (names is None or n in names)]
        await asyncio.gather(*(self._poll_record(r) for r in records))
        await self._notify()

    async def _poll_record(self, record: ModelRecord) -> None:
        async with record.poll_lock:  # one poll per source at a time, applied in order
            source = record.source
            try:
                listing: Listing = await asyncio.get_running_loop().run_in_executor(
                    None, source.poll_once)
            except Exception as exc:
                message = exc.message if isinstance(exc, CorollaError) else (
                    f"source failed: {exc!r}")
                if record.source is source and not record.removed:
                    if record.source_error != message:
                        log.error("model %s: %s (keeping what is loaded)", record.config.name,
                                  message)
                    record.source_error = message
                return
            if record.source is not source or record.removed:
                return  # replaced or removed meanwhile
            if record.source_error is not None:
                log.info("model %s: the source answers again", record.config.name)
            record.source_error = None
            record.polled = True
            record.pending = dict(listing.pending)
            self._set_aspired(record, listing.aspired)

    async def run_polling(self, interval: float, stop: asyncio.Event) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set (interval <= 0: never)."""
        if interval <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if not stop.is_set():
                await self.poll()

    def _set_aspired(self, record: ModelRecord, aspired: Sequence[AspiredVersion]) -> None:
        wanted = {a.version: a.path for a in aspired}
        changed = False
        for v, path in wanted.items():
            rec = record.versions.get(v)
            if rec is None:
                record.versions[v] = VersionRecord(version=v, path=path)
                changed = True
                continue
            if rec.path != path and rec.next_path != path:
                # Offered from another directory now (a new base path, replaced bytes).
                if rec.state in (State.START, State.END):
                    rec.path, rec.next_path = path, None
                    rec.state, rec.failed, rec.error = State.START, False, None
                else:  # LOADING, AVAILABLE, UNLOADING: swap once that finishes
                    log.info("model %s version %d: offered from %s now", record.config.name,
                             v, path)
                    rec.next_path, rec.reload_failed = path, False
                changed = True
            elif rec.path == path and rec.next_path is not None:
                rec.next_path = None  # back where it was
                if rec.reload_failed:
                    rec.reload_failed, rec.error = False, None
                changed = True
            if not rec.aspired:
                rec.aspired = True
                if rec.state == State.END:  # aspired again after an unload or a failure
                    rec.state, rec.failed, rec.error = State.START, False, None
                changed = True
        for v, rec in record.versions.items():
            if v not in wanted and rec.aspired:
                rec.aspired = False
                changed = True
        if changed:
            record.wake.set()

    # ---- the per-model worker ------------------------------------------------------------

    async def _work(self, record: ModelRecord) -> None:
        while True:
            await record.wake.wait()
            record.wake.clear()
            while (action := self._policy(self._snapshot(record))) is not None:
                await self._apply(record, action)
            # Forget versions that ended and are no longer aspired, failed ones too: the
            # status shows what the source offers now (TF Serving's FlushServables).
            for v in [v for v, r in record.versions.items()
                      if r.state == State.END and not r.aspired]:
                del record.versions[v]
            if record.removed and not any(r.loaded for r in record.versions.values()):
                if self._models.get(record.config.name) is record:
                    del self._models[record.config.name]
                self._close_source(record.source)
                await self._notify()
                return

    @staticmethod
    def _snapshot(record: ModelRecord) -> list[VersionSnapshot]:
        return [VersionSnapshot(version=r.version, state=r.state, aspired=r.aspired,
                                failed=r.failed,
                                stale=r.next_path is not None and not r.reload_failed)
                for r in record.versions.values()]

    async def _apply(self, record: ModelRecord, action: Action) -> None:
        rec = record.versions[action.version]
        if action.kind == "load":
            await self._load(record, rec)
        elif action.kind == "reload":
            await self._reload(record, rec)
        else:
            await self._unload(record, rec)

    def _load_blocking(self, config: ModelConfig, version: int, path: Path) -> LoadedVersion:
        runtime = runtime_for(self._runtimes, config, path)
        try:
            servable: Servable = runtime.load(path)
        except CorollaError:
            raise
        except Exception as exc:
            raise Internal(f"loading {path} failed: {exc!r}") from exc
        loaded = LoadedVersion(name=config.name, version=version, path=path,
                               servable=servable, platform=runtime.platform)
        try:
            for hook in self.prepare:
                hook(loaded)
        except BaseException:
            servable.close()
            raise
        return loaded

    async def _load(self, record: ModelRecord, rec: VersionRecord) -> None:
        name = record.config.name
        rec.state, rec.error = State.LOADING, None
        await self._notify()
        loop = asyncio.get_running_loop()
        attempts = self.options.max_load_retries + 1
        for attempt in range(1, attempts + 1):
            start = time.perf_counter()
            try:
                loaded = await loop.run_in_executor(
                    self._executor, self._load_blocking, record.config, rec.version, rec.path)
            except Exception as exc:
                err = exc if isinstance(exc, CorollaError) else Internal(repr(exc))
                rec.error = err
                self._hook(self.on_load, name, rec.version, time.perf_counter() - start, err)
                log.error("model %s version %d: load attempt %d/%d failed: %s",
                          name, rec.version, attempt, attempts, err.message)
                await self._notify()
                if attempt < attempts and rec.aspired and not record.removed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_unaspired(rec),
                                               timeout=self.options.load_retry_interval)
                if not rec.aspired or record.removed or attempt == attempts:
                    rec.state, rec.failed = State.END, True
                    await self._notify()
                    return
                continue
            self._hook(self.on_load, name, rec.version, time.perf_counter() - start, None)
            rec.loaded, rec.state, rec.error = loaded, State.AVAILABLE, None
            log.info("model %s version %d is AVAILABLE (%s, %.2fs)", name, rec.version,
                     loaded.platform, time.perf_counter() - start)
            self._publish()
            await self._notify()
            return

    async def _reload(self, record: ModelRecord, rec: VersionRecord) -> None:
        """Load ``rec.next_path`` beside the serving copy, swap, then unload the old copy."""
        name, path = record.config.name, rec.next_path
        assert path is not None and rec.loaded is not None
        start = time.perf_counter()
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._load_blocking, record.config, rec.version, path)
        except Exception as exc:
            err = exc if isinstance(exc, CorollaError) else Internal(repr(exc))
            self._hook(self.on_load, name, rec.version, time.perf_counter() - start, err)
            log.error("model %s version %d: loading it from %s failed, the copy from %s keeps "
                      "serving: %s", name, rec.version, path, rec.path, err.message)
            if rec.next_path == path:
                rec.error, rec.reload_failed = err, True
            await self._notify()
            return
        self._hook(self.on_load, name, rec.version, time.perf_counter() - start, None)
        old = rec.loaded
        rec.loaded, rec.path, rec.error = loaded, path, None
        if rec.next_path == path:
            rec.next_path = None
        self._publish()  # new requests take the new copy
        log.info("model %s version %d is AVAILABLE from %s (%.2fs)", name, rec.version, path,
                 time.perf_counter() - start)
        await self._notify()
        await self._close(record, old)

    async def _close(self, record: ModelRecord, loaded: LoadedVersion) -> None:
        try:
            await asyncio.wait_for(loaded.quiesce(), timeout=self.options.unload_drain_timeout)
        except TimeoutError:
            log.warning("model %s version %d: %d requests still in flight after %.0fs; "
                        "unloading anyway", record.config.name, loaded.version,
                        loaded.inflight, self.options.unload_drain_timeout)
        await asyncio.get_running_loop().run_in_executor(self._executor, loaded.servable.close)

    async def _wait_unaspired(self, rec: VersionRecord) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not rec.aspired)

    async def _unload(self, record: ModelRecord, rec: VersionRecord) -> None:
        loaded = rec.loaded
        rec.state = State.UNLOADING
        self._publish()  # new requests no longer see this version
        await self._notify()
        start = time.perf_counter()
        if loaded is not None:
            await self._close(record, loaded)
        rec.loaded, rec.state = None, State.END
        if rec.next_path is not None:  # unloaded to be loaded from its new directory
            rec.path, rec.next_path, rec.reload_failed = rec.next_path, None, False
        if rec.aspired and not record.removed:
            # Aspired again while it was unloading (its replacement disappeared): load it.
            rec.state, rec.failed, rec.error = State.START, False, None
        self._hook(self.on_unload, record.config.name, rec.version,
                   time.perf_counter() - start, None)
        log.info("model %s version %d unloaded", record.config.name, rec.version)
        await self._notify()

    @staticmethod
    def _hook(hooks: list[LoadHook], name: str, version: int, seconds: float,
              err: CorollaError | None) -> None:
        for h in hooks:
            try:
                h(name, version, seconds, err)
            except Exception:  # a metrics hook must never break loading
                log.exception("load hook failed")

    def _publish(self) -> None:
        models = {}
        for name, record in self._models.items():
            versions = {v: r.loaded for v, r in record.versions.items()
                        if r.state == State.AVAILABLE and r.loaded is not None}
            # A label moves only once its new target is AVAILABLE; until then it keeps
            # pointing where it pointed (requests on it never see a gap).
            previous = self.serving_map.models.get(name)
            labels = {}
            for label, target in record.config.version_labels.items():
                if target in versions:
                    labels[label] = target
                elif previous is not None and previous.labels.get(label) in versions:
                    labels[label] = previous.labels[label]
            models[name] = ModelEntry(name=name, versions=MappingProxyType(versions),
                                      labels=MappingProxyType(labels))
        self.serving_map = ServingMap(MappingProxyType(models))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---- queries -------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return [n for n, r in self._models.items() if not r.removed]

    def has_model(self, name: str) -> bool:
        r = self._models.get(name)
        return r is not None and not r.removed

    def config(self, name: str) -> ModelConfig | None:
        r = self._models.get(name)
        return None if r is None or r.removed else r.config

    def statuses(self, name: str) -> list[VersionStatus]:
        record = self._models.get(name)
        if record is None:
            return []
        # A source that cannot be read shows on every version that has no error of its own:
        # as the error of those not serving, as a note (error_code stays OK) on those that keep
        # serving; versions the source has seen but does not offer show too.
        source_err = (None if record.source_error is None
                      else Unavailable(f"source: {record.source_error} (retrying; loaded "
                                       "versions keep serving)"))
        out = [VersionStatus(version=r.version, state=r.state, error=r.error or source_err)
               if r.state != State.AVAILABLE or r.error is not None or source_err is None
               else VersionStatus(version=r.version, state=r.state, error=None,
                                  note=source_err.message)
               for r in record.versions.values()]
        out += [VersionStatus(version=v, state=State.START if err is None else State.END,
                              error=err)
                for v, err in record.pending.items() if v not in record.versions]
        return sorted(out, key=lambda s: s.version, reverse=True)

    def source_error(self, name: str) -> str | None:
        r = self._models.get(name)
        return None if r is None else r.source_error

    def settled(self, name: str) -> bool:
        """The source has answered and every aspired version is AVAILABLE or has failed."""
        r = self._models.get(name)
        if r is None or r.removed:
            return True
        if not r.polled:
            return r.source_error is not None
        if any(err is None for v, err in r.pending.items() if v not in r.versions):
            return False  # still being fetched
        return all(v.state in (State.AVAILABLE, State.END)
                   for v in r.versions.values() if v.aspired)

    def available_versions(self, name: str) -> list[int]:
        entry = self.serving_map.models.get(name)
        return sorted(entry.versions) if entry is not None else []

    def model_ready(self, name: str) -> bool:
        entry = self.serving_map.models.get(name)
        return entry is not None and bool(entry.versions)

    def all_ready(self) -> bool:
        names = self.model_names()
        return bool(names) and all(self.model_ready(n) for n in names)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None
                         ) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def close(self) -> None:
        """Unload everything (shutdown): readiness is the caller's business."""
        await self.set_configs([])
        for r in list(self._models.values()):
            if r.worker is not None and not r.worker.done():
                await r.worker
