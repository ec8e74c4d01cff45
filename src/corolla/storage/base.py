"""The store interface: list a base path's versions, read and write their files.

A store addresses ``<base>/<version>/<relative file path>``. Every method blocks (call it from a
worker thread) and raises only :class:`corolla.errors.CorollaError` subclasses: client-library
exceptions are translated where they arise (:func:`unavailable` for a store that cannot be
reached, is throttling or refuses the credentials; :class:`NotFound` for a bucket or object that
does not exist).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from corolla.errors import FailedPrecondition, NotFound, Unavailable
from corolla.model_dir import METADATA_FILE

# Written first and removed last by a Corolla publisher to an object store: a version that
# holds it and no sealed corolla.json is an upload in progress (or one that died).
PUBLISHING_MARKER = ".corolla-publishing"

# Called with the number of bytes just transferred (progress bars, metrics).
Progress = Callable[[int], None]


class StoreUnavailable(Unavailable):
    """The store could not be reached, is throttling, or refuses the credentials."""


class StoreNotFound(NotFound):
    """The bucket, prefix, key or version does not exist."""


class BeingPublished(Unavailable):
    """The version's upload has not finished (or died halfway)."""


class MissingExtra(FailedPrecondition):
    """The client library of a store is not installed."""


def missing_extra(scheme: str, extra: str, exc: ImportError) -> MissingExtra:
    return MissingExtra(f"{scheme}:// base paths need the corolla[{extra}] extra: "
                        f"pip install 'corolla[{extra}]' ({exc.name or exc} is missing)")


@dataclass(frozen=True, kw_only=True)
class RemoteFile:
    name: str  # relative to the version directory, '/'-separated
    size: int
    etag: str  # whatever changes when the bytes change (ETag, generation, SHA-256)


@dataclass(frozen=True, kw_only=True)
class RemoteVersion:
    version: int
    files: tuple[RemoteFile, ...]

    @property
    def has_metadata(self) -> bool:
        return any(f.name == METADATA_FILE for f in self.files)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def fingerprint(self) -> str:
        """Changes whenever any file of the version is added, removed or rewritten."""
        h = hashlib.sha256(str(self.version).encode())
        for f in sorted(self.files, key=lambda f: f.name):
            h.update(f"\0{f.name}\0{f.size}\0{f.etag}".encode())
        return h.hexdigest()

    def file(self, name: str) -> RemoteFile | None:
        return next((f for f in self.files if f.name == name), None)


class Store(Protocol):
    uri: str
    name: str  # the URI for messages: credentials and signed query strings removed

    def list_versions(self) -> dict[int, RemoteVersion]:
        """Every version under the base path. An empty or missing base path raises
        :class:`StoreNotFound`: an empty answer would unload every version."""

    def read_bytes(self, version: int, name: str) -> bytes: ...

    def download(self, version: RemoteVersion, name: str, dest: Path,
                 progress: Progress | None = None) -> None:
        """Write one file of a listed version to ``dest``."""

    def publish(self, version: int | None, source_dir: Path, files: Iterable[str],
                metadata: bytes | None, progress: Progress | None = None) -> int:
        """Upload ``files`` of ``source_dir`` as ``version`` (None: the next number), then
        ``metadata`` as corolla.json, last. Returns the version number."""

    def delete_version(self, version: int) -> None: ...

    def watch(self, notify: Callable[[], None]) -> None:
        """Call ``notify()`` when a version is announced (stores without announcements: no-op)."""

    def close(self) -> None: ...


def redact(uri: str) -> str:
    """``uri`` fit for logs, status and metrics: no password (``redis://user:***@host``) and
    no query string (signed URLs carry their token there)."""
    head, sep, rest = uri.partition("://")
    if not sep:
        return uri
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        creds, _, host = netloc.rpartition("@")
        user = creds.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in creds else f"{user}@{host}"
    path, q, _query = path.partition("?")
    return f"{head}://{netloc}{slash}{path}{'?…' if q else ''}"


def version_name(text: str) -> int | None:
    from corolla.model_dir import is_version_name

    return int(text) if is_version_name(text) else None


def check_new_version(existing: Iterable[int], version: int | None) -> int:
    found = set(existing)
    if version is None:
        return max(found, default=0) + 1
    if version <= 0:
        raise FailedPrecondition(f"version must be a positive integer, got {version}")
    if version in found:
        raise FailedPrecondition(f"version {version} already exists")
    return version
