"""What the object stores (S3, GCS) share: versions are key prefixes under a base prefix.

``<scheme>://<bucket>/<prefix>/<version>/<file>``. A version is published by writing the
marker ``.corolla-publishing``, uploading its files, then ``corolla.json`` (with the file
manifest) last, then removing the marker: a reader that sees corolla.json and
finds every file it lists with the right size has a complete version; one that sees files but no
corolla.json waits (a version without corolla.json counts as complete once two polls in a row
see the same files, sizes and etags: see :mod:`corolla.storage.source`), unless the marker is
there: a Corolla upload that is paused or died halfway is never taken for a finished version.
Subclasses implement the six primitives and translate their client's exceptions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from corolla.errors import InvalidArgument
from corolla.model_dir import METADATA_FILE
from corolla.storage.base import (
    PUBLISHING_MARKER,
    Progress,
    RemoteFile,
    RemoteVersion,
    StoreNotFound,
    check_new_version,
    version_name,
)


def split_bucket(uri: str, scheme: str) -> tuple[str, str]:
    rest = uri[len(scheme) + 3:]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise InvalidArgument(f"{uri}: no bucket name")
    return bucket, prefix.strip("/")


class ObjectStore(abc.ABC):
    scheme = ""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.name = self.uri  # for messages (no credentials in s3:// or gs:// URIs)
        self.bucket, self.prefix = split_bucket(self.uri, self.scheme)

    # ---- primitives ------------------------------------------------------------------------

    @abc.abstractmethod
    def _list(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        """(key, size, etag) of every object whose key starts with ``prefix``."""

    @abc.abstractmethod
    def _get_file(self, key: str, dest: Path, progress: Progress | None) -> None: ...

    @abc.abstractmethod
    def _get_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def _put_file(self, key: str, path: Path, progress: Progress | None) -> None: ...

    @abc.abstractmethod
    def _put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _delete(self, keys: list[str]) -> None: ...

    # ---- the store interface ---------------------------------------------------------------

    def _base(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def key(self, version: int, name: str) -> str:
        return f"{self._base()}{version}/{name}"

    def list_versions(self) -> dict[int, RemoteVersion]:
        base = self._base()
        files: dict[int, list[RemoteFile]] = {}
        seen_any = False
        for key, size, etag in self._list(base):
            seen_any = True
            head, _, name = key[len(base):].partition("/")
            version = version_name(head)
            if version is None or not name or name.endswith("/"):
                continue  # other objects, staging names, "directory" markers
            files.setdefault(version, []).append(RemoteFile(name=name, size=size, etag=etag))
        if not seen_any:
            raise StoreNotFound(f"{self.name}: no objects under this base path")
        return {v: RemoteVersion(version=v, files=tuple(fs)) for v, fs in files.items()}

    def read_bytes(self, version: int, name: str) -> bytes:
        return self._get_bytes(self.key(version, name))

    def download(self, version: RemoteVersion, name: str, dest: Path,
                 progress: Progress | None = None) -> None:
        self._get_file(self.key(version.version, name), dest, progress)

    def publish(self, version: int | None, source_dir: Path, files: Iterable[str],
                metadata: bytes | None, progress: Progress | None = None) -> int:
        try:
            existing = list(self.list_versions())
        except StoreNotFound:
            existing = []
        number = check_new_version(existing, version)
        marker = self.key(number, PUBLISHING_MARKER)
        self._put_bytes(marker, b"")
        for name in files:
            self._put_file(self.key(number, name), source_dir / name, progress)
        if metadata is not None:
            self._put_bytes(self.key(number, METADATA_FILE), metadata)
        self._delete([marker])
        return number

    def delete_version(self, version: int) -> None:
        # corolla.json first: readers stop seeing a complete version before files go.
        keys = [k for k, _s, _e in self._list(f"{self._base()}{version}/")]
        if not keys:
            raise StoreNotFound(f"{self.name}: no version {version}")
        meta = self.key(version, METADATA_FILE)
        if meta in keys:
            self._delete([meta])
        rest = [k for k in keys if k != meta]
        for i in range(0, len(rest), 1000):
            self._delete(rest[i:i + 1000])

    def watch(self, notify: Callable[[], None]) -> None:  # noqa: B027 (polled: no-op)
        """Object stores have no announcements: they are polled."""

    def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release the client."""
