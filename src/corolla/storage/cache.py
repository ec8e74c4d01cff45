"""The local model cache (``--model_cache_dir``): verified copies of remote versions.

Layout: ``<root>/<store key>/<fingerprint>/<version>/`` is a version directory exactly as on
disk (``path.name`` is the version number); beside it, ``.complete`` (written once the copy is
verified; its presence makes the entry usable, and its mtime is the entry's last use) and
``.lease`` (a lock file). A copy is written under ``<store key>/.tmp-*`` and renamed into place,
so a crash never leaves a half-written entry that looks usable; the fingerprint changes whenever
any remote file does, so a version replaced in the store gets a new entry.

Several processes may share the cache (``--rest_workers``, or several servers on one node):
filling an entry takes an exclusive ``flock`` on a per-entry lock file (the second process waits,
then finds the entry complete), and every process holds a shared ``flock`` on ``.lease`` of each
entry it aspires to. Pruning and eviction remove only entries whose ``.lease`` can be locked
exclusively, i.e. that no process uses. The total size is bounded by ``max_bytes``: least
recently used unleased entries are evicted to make room, and a version that still does not fit
is refused with RESOURCE_EXHAUSTED. Every method blocks: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from corolla.errors import ResourceExhausted
from corolla.storage.base import redact
from corolla.storage.uri import store_key

log = logging.getLogger("corolla.storage.cache")

COMPLETE = ".complete"
LEASE = ".lease"
STALE_TMP_SECONDS = 3600.0


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


def _try_exclusive(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None when someone holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class ModelCache:
    def __init__(self, root: str | os.PathLike[str], max_bytes: int = 0) -> None:
        """``max_bytes`` 0: no bound but the disk."""
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._leases: dict[Path, int] = {}  # entry dir -> fd with a shared lock
        self._owners: dict[str, set[Path]] = {}  # source -> the entries it leases
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- entries -----------------------------------------------------------------------------

    def store_dir(self, uri: str) -> Path:
        return self.root / store_key(uri)

    def entry(self, uri: str, version: int, fingerprint: str) -> Path:
        return self.store_dir(uri) / fingerprint[:24]

    def lookup(self, uri: str, version: int, fingerprint: str) -> Path | None:
        """The verified copy's version directory, or None."""
        entry = self.entry(uri, version, fingerprint)
        marker = entry / COMPLETE
        if not marker.exists():
            return None
        with contextlib.suppress(OSError):
            os.utime(marker)
        return entry / str(version)

    def fill(self, uri: str, version: int, fingerprint: str, size: int,
             write: Callable[[Path], None]) -> Path:
        """The verified copy, made with ``write(empty version directory)`` if there is none.

        ``write`` downloads and verifies (raising leaves nothing behind)."""
        store = self.store_dir(uri)
        store.mkdir(parents=True, exist_ok=True)
        entry = self.entry(uri, version, fingerprint)
        with _flock(store / f".fill-{entry.name}.lock", fcntl.LOCK_EX):
            found = self.lookup(uri, version, fingerprint)
            if found is not None:
                return found
            self.make_room(size)
            tmp = store / f".tmp-{uuid.uuid4().hex}"
            try:
                (tmp / str(version)).mkdir(parents=True)
                write(tmp / str(version))
                nbytes = sum(p.stat().st_size for p in (tmp / str(version)).rglob("*")
                             if p.is_file())
                (tmp / COMPLETE).write_text(json.dumps(
                    {"uri": redact(uri), "version": version, "bytes": nbytes}))
                if entry.exists():  # a copy that never completed (a crash): replace it
                    shutil.rmtree(entry)
                os.rename(tmp, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return entry / str(version)

    # ---- leases, pruning, eviction -----------------------------------------------------------

    def hold(self, owner: str, paths: set[Path]) -> None:
        """Lease exactly these version directories' entries for ``owner`` (one source), and
        release what it held before and holds no more. An entry stays leased by this process
        while any owner holds it."""
        with self._lock:
            self._owners[owner] = {p.parent for p in paths}
            wanted = set().union(*self._owners.values())
            for entry in list(self._leases):
                if entry not in wanted:
                    os.close(self._leases.pop(entry))
            for entry in wanted - set(self._leases):
                fd = os.open(entry / LEASE, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_SH)
                self._leases[entry] = fd

    def release(self, owner: str) -> None:
        self.hold(owner, set())
        with self._lock:
            self._owners.pop(owner, None)

    def _remove(self, entry: Path) -> bool:
        """Remove an entry no process leases; False if one does."""
        with self._lock:
            if entry in self._leases:
                return False
        fd = _try_exclusive(entry / LEASE)
        if fd is None:
            return False
        try:
            # The marker goes first: a crash mid-way leaves an entry that is not usable.
            (entry / COMPLETE).unlink(missing_ok=True)
            doomed = entry.with_name(f".tmp-{uuid.uuid4().hex}")
            os.rename(entry, doomed)
        finally:
            os.close(fd)
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def prune(self, uri: str, keep: set[Path]) -> list[Path]:
        """Remove this store's entries outside ``keep`` that no process leases."""
        store = self.store_dir(uri)
        keep_entries = {p.parent for p in keep}
        removed = []
        for entry in self._entries(store):
            if entry not in keep_entries and self._remove(entry):
                removed.append(entry)
        if removed:
            log.info("model cache: removed %d unused version(s) of %s", len(removed),
                     redact(uri))
        return removed

    def _entries(self, store: Path) -> list[Path]:
        try:
            return [p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except FileNotFoundError:
            return []

    def usage(self) -> tuple[int, int]:
        """(bytes, entries) of complete entries."""
        total = count = 0
        for store in self._stores():
            for entry in self._entries(store):
                size = _entry_bytes(entry)
                if size is not None:
                    total, count = total + size, count + 1
        return total, count

    def _stores(self) -> list[Path]:
        try:
            return [p for p in self.root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []

    def make_room(self, needed: int) -> None:
        """Evict least recently used unleased entries until ``needed`` more bytes fit."""
        self._clean_tmp()
        if self.max_bytes <= 0:
            return
        if needed > self.max_bytes:
            raise ResourceExhausted(f"a version of {needed} bytes does not fit the model "
                                    f"cache (--model_cache_max_bytes={self.max_bytes})")
        used, _n = self.usage()
        if used + needed <= self.max_bytes:
            return
        candidates = []
        for store in self._stores():
            for entry in self._entries(store):
                marker = entry / COMPLETE
                size = _entry_bytes(entry)
                with contextlib.suppress(OSError):
                    candidates.append((marker.stat().st_mtime, entry, size or 0))
        for _mtime, entry, size in sorted(candidates, key=lambda c: c[0]):
            if used + needed <= self.max_bytes:
                break
            if self._remove(entry):
                used -= size
                log.info("model cache: evicted %s (%d bytes) to make room", entry, size)
        if used + needed > self.max_bytes:
            raise ResourceExhausted(
                f"the model cache is full: {used} bytes in use by loaded versions, "
                f"{needed} more needed (--model_cache_max_bytes={self.max_bytes})")

    def _clean_tmp(self) -> None:
        now = time.time()
        for store in self._stores():
            for tmp in store.glob(".tmp-*"):
                with contextlib.suppress(OSError):
                    if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                        shutil.rmtree(tmp, ignore_errors=True)


def _entry_bytes(entry: Path) -> int | None:
    try:
        return int(json.loads((entry / COMPLETE).read_text())["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
