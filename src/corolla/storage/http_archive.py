"""``http(s)://…/model.tar.gz`` (``.tgz``, ``.tar``, ``.zip``): one version in an archive.

The archive holds one version directory: its files under a numeric top-level directory (that
number is the version), or at its top level (version 1). Listing asks the server with HEAD; the
archive is downloaded only when its ETag (or Last-Modified and length) is new, into
``state_dir``, and kept there with an index, so a restart with a warm cache sends one HEAD and
downloads nothing. Files are extracted from the kept archive; members that are links, devices
or paths leaving the version directory are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from corolla.errors import CorollaError, DataLoss, FailedPrecondition, InvalidArgument
from corolla.model_dir import check_relative_name
from corolla.storage.base import (
    Progress,
    RemoteFile,
    RemoteVersion,
    StoreNotFound,
    StoreUnavailable,
    redact,
    version_name,
)

TIMEOUT = 30.0
SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


class HttpArchiveStore:
    def __init__(self, uri: str, state_dir: Path) -> None:
        if not uri.split("?")[0].endswith(SUFFIXES):
            raise InvalidArgument(f"{redact(uri)}: an HTTP base path is an archive "
                                  f"({', '.join(SUFFIXES)})")
        self.uri = uri
        self.name = redact(uri)  # for messages: no credentials, no signed query
        self.state_dir = state_dir
        self._is_zip = uri.split("?")[0].endswith(".zip")

    # ---- HTTP --------------------------------------------------------------------------------

    def _open(self, method: str) -> Any:
        req = urllib.request.Request(self.uri, method=method,
                                     headers={"User-Agent": "corolla"})
        try:
            return urllib.request.urlopen(req, timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (404, 410):
                raise StoreNotFound(f"{self.name}: HTTP {exc.code}") from exc
            raise StoreUnavailable(f"{self.name}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StoreUnavailable(f"{self.name}: {getattr(exc, 'reason', exc)}") from exc

    def _tag(self, headers: Any) -> str:
        tag = headers.get("ETag") or ""
        if not tag:
            tag = f"{headers.get('Last-Modified', '')}/{headers.get('Content-Length', '')}"
        return tag

    def _index_path(self) -> Path:
        return self.state_dir / "index.json"

    def _archive_path(self, tag: str) -> Path:
        return self.state_dir / f"{hashlib.sha256(tag.encode()).hexdigest()[:24]}.archive"

    def _read_index(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self._index_path().read_text()))
        except (OSError, ValueError):
            return {}

    # ---- listing -----------------------------------------------------------------------------

    def list_versions(self) -> dict[int, RemoteVersion]:
        with self._open("HEAD") as resp:
            tag = self._tag(resp.headers)
        entry = self._read_index().get(tag)
        if entry is None or not self._archive_path(tag).exists():
            entry = self._fetch(tag)
        version = int(entry["version"])
        files = tuple(RemoteFile(name=n, size=int(s), etag=tag) for n, s in entry["files"])
        return {version: RemoteVersion(version=version, files=files)}

    def _fetch(self, tag: str) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        part = self.state_dir / f".{uuid.uuid4().hex}.part"
        try:
            with self._open("GET") as resp, part.open("wb") as out:
                got_tag = self._tag(resp.headers)
                length = resp.headers.get("Content-Length")
                try:
                    shutil.copyfileobj(resp, out, 1 << 20)
                except OSError as exc:
                    raise StoreUnavailable(f"{self.name}: download failed: {exc}") from exc
            if length is not None and part.stat().st_size != int(length):
                raise StoreUnavailable(f"{self.name}: got {part.stat().st_size} of {length} "
                                       "bytes")
            version, files = self._inspect(part)
            os.replace(part, self._archive_path(got_tag))
        finally:
            part.unlink(missing_ok=True)
        index = {k: v for k, v in self._read_index().items()
                 if self._archive_path(k).exists()}
        entry = {"version": version, "files": files}
        index[got_tag] = entry
        for old in [k for k in index if k != got_tag]:  # keep the newest archive only
            self._archive_path(old).unlink(missing_ok=True)
            del index[old]
        tmp = self._index_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, self._index_path())
        if got_tag != tag:  # changed between HEAD and GET: list it under what we got
            return dict(self._read_index()[got_tag])
        return entry

    # ---- the archive -------------------------------------------------------------------------

    def _members(self, archive: Path) -> list[tuple[str, int]]:
        try:
            if self._is_zip:
                with zipfile.ZipFile(archive) as z:
                    return [(i.filename, i.file_size) for i in z.infolist() if not i.is_dir()]
            with tarfile.open(archive) as t:
                out = []
                for m in t.getmembers():
                    if m.isdir():
                        continue
                    if not m.isfile():
                        raise DataLoss(f"{self.name}: {m.name} is a link or a device; "
                                       "archives may hold regular files only")
                    out.append((m.name, m.size))
                return out
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise DataLoss(f"{self.name}: not a readable archive: {exc}") from exc

    def _inspect(self, archive: Path) -> tuple[int, list[tuple[str, int]]]:
        members = [(n.removeprefix("./"), s) for n, s in self._members(archive)]
        tops = {n.split("/", 1)[0] for n, _s in members}
        version, strip = 1, ""
        if len(tops) == 1 and all("/" in n for n, _s in members):
            top = next(iter(tops))
            number = version_name(top)
            if number is not None:
                version, strip = number, top + "/"
        files = []
        for name, size in members:
            rel = name[len(strip):]
            try:
                check_relative_name(rel)
            except InvalidArgument:
                if rel == "corolla.json":
                    files.append((rel, size))
                    continue
                raise DataLoss(f"{self.name}: member {name!r} leaves the version directory"
                               ) from None
            files.append((rel, size))
        if not files:
            raise DataLoss(f"{self.name}: the archive is empty")
        return version, files

    def _open_member(self, version: RemoteVersion, name: str) -> tuple[Any, IO[bytes]]:
        tag = version.files[0].etag if version.files else ""
        archive = self._archive_path(tag)
        if not archive.exists():
            raise StoreNotFound(f"{self.name}: the archive changed; list again")
        strip = f"{version.version}/"
        if self._is_zip:
            z = zipfile.ZipFile(archive)
            in_zip = set(z.namelist())
            member = strip + name if strip + name in in_zip else name
            return z, z.open(member)
        t = tarfile.open(archive)  # noqa: SIM115 (closed by the caller)
        in_tar = {n.removeprefix("./"): n for n in t.getnames()}
        found = in_tar.get(strip + name) or in_tar.get(name)
        f = t.extractfile(found) if found is not None else None
        if f is None:
            t.close()
            raise StoreNotFound(f"{self.name}: no {name} in the archive")
        return t, f

    def download(self, version: RemoteVersion, name: str, dest: Path,
                 progress: Progress | None = None) -> None:
        try:
            holder, src = self._open_member(version, name)
            with holder, src, dest.open("wb") as out:
                while data := src.read(1 << 20):
                    out.write(data)
                    if progress is not None:
                        progress(len(data))
        except CorollaError:
            raise
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
            raise DataLoss(f"{self.name}: extracting {name}: {exc}") from exc

    def read_bytes(self, version: int, name: str) -> bytes:
        listing = self.list_versions()
        if version not in listing:
            raise StoreNotFound(f"{self.name}: no version {version}")
        holder, src = self._open_member(listing[version], name)
        with holder, src:
            return bytes(src.read())

    def publish(self, version: int | None, source_dir: Path, files: Iterable[str],
                metadata: bytes | None, progress: Progress | None = None) -> int:
        raise FailedPrecondition(f"{self.name}: HTTP archives are read-only")

    def delete_version(self, version: int) -> None:
        raise FailedPrecondition(f"{self.name}: HTTP archives are read-only")

    def watch(self, notify: Callable[[], None]) -> None:
        pass

    def close(self) -> None:
        pass
