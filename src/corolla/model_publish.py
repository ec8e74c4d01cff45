"""Writing a version, and checking its files: the writer side of :mod:`corolla.model_dir`.

Publication is atomic (:func:`stage_version` / :func:`publish_version`): a version is written
under a hidden non-numeric name in its base path, sealed, flushed to disk, then renamed to its
number, so readers see a version whole or not at all, and concurrent writers never overwrite
each other's versions.

The file manifest: ``corolla.json``'s ``files`` maps the relative path of every other file of
the version to its size and SHA-256. :func:`publish_version` writes it (:func:`seal_version`:
``corolla.json`` is rewritten last, atomically), so every Corolla publisher seals its versions;
a copy of a version (a remote store, a cache) is complete exactly when its files match it
(:func:`verify_files`).

Blocking file I/O throughout: callers on an event loop run these in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from corolla.errors import DataLoss, InvalidArgument
from corolla.model_dir import METADATA_FILE, FileDigest, is_version_name, read_metadata


def hash_file(path: str | os.PathLike[str]) -> FileDigest:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return FileDigest(size=size, sha256=h.hexdigest())


def version_files(version_dir: str | os.PathLike[str]) -> list[str]:
    """Every regular file of a version except corolla.json, as sorted '/'-separated paths."""
    root = Path(version_dir)
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel != METADATA_FILE:
                out.append(rel)
    return sorted(out)


def manifest_for(version_dir: str | os.PathLike[str]) -> dict[str, FileDigest]:
    return {rel: hash_file(Path(version_dir) / rel) for rel in version_files(version_dir)}


def sealed_metadata_bytes(version_dir: str | os.PathLike[str]) -> bytes:
    """corolla.json of ``version_dir`` with its ``files`` manifest computed now.

    The document is kept as written (unknown keys too) except for ``files``."""
    path = Path(version_dir) / METADATA_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{path}: unreadable metadata ({exc})") from exc
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{path}: metadata must be a JSON object")
    raw["files"] = {k: v.to_json() for k, v in manifest_for(version_dir).items()}
    return (json.dumps(raw, indent=2) + "\n").encode("utf-8")


def seal_version(version_dir: str | os.PathLike[str]) -> None:
    """Write the file manifest into corolla.json (atomically: a reader sees old or new)."""
    data = sealed_metadata_bytes(version_dir)
    path = Path(version_dir) / METADATA_FILE
    tmp = path.with_name(f".{METADATA_FILE}.{uuid.uuid4().hex}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def verify_files(version_dir: str | os.PathLike[str], files: Mapping[str, FileDigest]) -> None:
    """Raise :class:`DataLoss` unless every manifest file is there with its size and hash."""
    problems = []
    for rel, want in sorted(files.items()):
        p = Path(version_dir) / rel
        try:
            got = hash_file(p)
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
            continue
        except OSError as exc:
            problems.append(f"{rel}: unreadable ({exc.strerror or exc})")
            continue
        if got.size != want.size:
            problems.append(f"{rel}: {got.size} bytes, the manifest says {want.size}")
        elif got.sha256 != want.sha256:
            problems.append(f"{rel}: SHA-256 {got.sha256[:12]}…, the manifest says "
                            f"{want.sha256[:12]}…")
    if problems:
        raise DataLoss(f"{version_dir}: does not match its manifest: " + "; ".join(problems[:5])
                       + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))


def existing_versions(base_path: str | os.PathLike[str]) -> list[int]:
    base = Path(base_path)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if is_version_name(p.name) and p.is_dir())


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def stage_version(
    base_path: str | os.PathLike[str], version: int | None = None
) -> Iterator[StagedVersion]:
    """Write a version under a hidden name, then publish it atomically on clean exit.

    ``version=None`` takes the next number after the highest existing one. On an exception the
    staged directory is removed and nothing is published.
    """
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".staging-{uuid.uuid4().hex}"
    tmp.mkdir()
    staged = StagedVersion(path=tmp, base_path=base, requested_version=version)
    try:
        yield staged
        staged.published = publish_version(base, tmp, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(kw_only=True)
class StagedVersion:
    path: Path
    base_path: Path
    requested_version: int | None
    published: Path | None = None


def publish_version(
    base_path: str | os.PathLike[str], staged_dir: str | os.PathLike[str], version: int | None
) -> Path:
    """Rename a fully written directory inside ``base_path`` to its version number."""
    base, staged = Path(base_path), Path(staged_dir)
    if staged.parent.resolve() != base.resolve():
        raise InvalidArgument("a staged version must live in the base path it is published to")
    read_metadata(staged)  # refuse to publish something the server would reject
    seal_version(staged)  # the file manifest, written last
    _fsync_tree(staged)
    for _attempt in range(100):
        number = version if version is not None else (max(existing_versions(base), default=0) + 1)
        if number <= 0:
            raise InvalidArgument(f"version must be a positive integer, got {number}")
        target = base / str(number)
        try:
            # os.rename onto an existing non-empty directory fails, so concurrent writers
            # never overwrite each other's versions.
            if target.exists():
                raise FileExistsError(target)
            os.rename(staged, target)
        except (FileExistsError, OSError) as exc:
            if version is not None:
                raise InvalidArgument(f"version {number} already exists in {base}") from exc
            continue
        _fsync_dir(base)
        return target
    raise InvalidArgument(f"could not find a free version number in {base}")
