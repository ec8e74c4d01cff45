"""A local base path as a store: what ``corolla push`` and ``fetch-model`` use for a directory.

Publishing goes through :func:`corolla.model_publish.stage_version` semantics: files are copied
under a hidden staging name, sealed, and renamed to the version number, so a server polling the
directory sees the version whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from corolla.model_dir import METADATA_FILE, is_version_name
from corolla.model_publish import publish_version
from corolla.storage.base import (
    Progress,
    RemoteFile,
    RemoteVersion,
    StoreNotFound,
    StoreUnavailable,
    check_new_version,
)


class LocalStore:
    def __init__(self, path: str) -> None:
        self.uri = self.name = path
        self.root = Path(path)

    def list_versions(self) -> dict[int, RemoteVersion]:
        try:
            entries = [e for e in os.scandir(self.root) if is_version_name(e.name) and e.is_dir()]
        except FileNotFoundError as exc:
            raise StoreNotFound(f"{self.name}: no such directory") from exc
        except OSError as exc:
            raise StoreUnavailable(f"{self.name}: {exc.strerror or exc}") from exc
        out = {}
        for e in entries:
            files = []
            for dirpath, _dirs, names in os.walk(e.path):
                for name in names:
                    p = Path(dirpath) / name
                    st = p.stat()
                    files.append(RemoteFile(name=p.relative_to(e.path).as_posix(),
                                            size=st.st_size, etag=f"{st.st_mtime_ns}"))
            out[int(e.name)] = RemoteVersion(version=int(e.name), files=tuple(files))
        return out

    def _path(self, version: int, name: str) -> Path:
        return self.root / str(version) / name

    def read_bytes(self, version: int, name: str) -> bytes:
        try:
            return self._path(version, name).read_bytes()
        except FileNotFoundError as exc:
            raise StoreNotFound(f"{self.name}: no {version}/{name}") from exc

    def download(self, version: RemoteVersion, name: str, dest: Path,
                 progress: Progress | None = None) -> None:
        src = self._path(version.version, name)
        try:
            shutil.copyfile(src, dest)
        except FileNotFoundError as exc:
            raise StoreNotFound(f"{self.name}: no {version.version}/{name}") from exc
        if progress is not None:
            progress(dest.stat().st_size)

    def publish(self, version: int | None, source_dir: Path, files: Iterable[str],
                metadata: bytes | None, progress: Progress | None = None) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        existing = [int(p.name) for p in self.root.iterdir() if is_version_name(p.name)]
        check_new_version(existing, version)
        staged = self.root / f".staging-{uuid.uuid4().hex}"
        try:
            for name in files:
                dest = staged / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source_dir / name, dest)
                if progress is not None:
                    progress(dest.stat().st_size)
            if metadata is not None:
                (staged / METADATA_FILE).write_bytes(metadata)
                return int(publish_version(self.root, staged, version).name)
            # No corolla.json (a SavedModel): the rename alone publishes it.
            number = check_new_version(existing, version)
            os.rename(staged, self.root / str(number))
            return number
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def delete_version(self, version: int) -> None:
        path = self.root / str(version)
        if not path.is_dir():
            raise StoreNotFound(f"{self.name}: no version {version}")
        # Renamed away first: a polling server stops seeing it at once, never half-deleted.
        doomed = self.root / f".deleting-{version}-{uuid.uuid4().hex}"
        os.rename(path, doomed)
        shutil.rmtree(doomed)

    def watch(self, notify: Callable[[], None]) -> None:
        pass

    def close(self) -> None:
        pass
