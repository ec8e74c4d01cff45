"""Downloading one version into a directory, verified; publishing one directory as a version.

Shared by the server's remote source (into its cache) and the commands (``fetch-model`` into a
base path, ``push`` from one). Verification: a version whose corolla.json carries the file
manifest must match it file by file (size and SHA-256); one without (an unsealed corolla.json,
a SavedModel) must match the listing's sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from corolla.errors import DataLoss, InvalidArgument
from corolla.model_dir import (
    METADATA_FILE,
    FileDigest,
    check_relative_name,
    files_from_json,
    read_metadata,
)
from corolla.model_publish import sealed_metadata_bytes, verify_files, version_files
from corolla.storage.base import (
    PUBLISHING_MARKER,
    BeingPublished,
    Progress,
    RemoteVersion,
    Store,
)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to download for a listed version, and how to verify it."""

    version: RemoteVersion
    metadata: bytes | None  # corolla.json as read (written last into the copy)
    manifest: dict[str, FileDigest] | None  # None: no file manifest (unsealed)

    @property
    def files(self) -> list[str]:
        if self.manifest is not None:
            return sorted(self.manifest)
        return sorted(f.name for f in self.version.files
                      if f.name not in (METADATA_FILE, PUBLISHING_MARKER))

    @property
    def size(self) -> int:
        if self.manifest is not None:
            return sum(d.size for d in self.manifest.values()) + len(self.metadata or b"")
        return self.version.size


def plan(store: Store, rv: RemoteVersion) -> Plan:
    """Read the version's corolla.json (if any) and check that the listing holds its files.

    Raises DataLoss when corolla.json promises files that the store does not hold as promised
    (deleted, truncated, or a publisher that wrote corolla.json first and is still uploading).
    """
    publishing = rv.file(PUBLISHING_MARKER) is not None
    if publishing and not rv.has_metadata:
        raise BeingPublished(f"{store.name}: version {rv.version} is being published (or its "
                             "upload stopped halfway)")
    if not rv.has_metadata:
        return Plan(version=rv, metadata=None, manifest=None)
    raw = store.read_bytes(rv.version, METADATA_FILE)
    try:
        doc = json.loads(raw)
        manifest = files_from_json(doc.get("files")) if isinstance(doc, dict) else {}
    except (ValueError, InvalidArgument) as exc:
        raise DataLoss(f"{store.name}: version {rv.version}: unreadable {METADATA_FILE} "
                       f"({exc})") from exc
    if not manifest:
        if publishing:
            raise BeingPublished(f"{store.name}: version {rv.version} is being published")
        return Plan(version=rv, metadata=raw, manifest=None)
    problems = []
    for name, want in sorted(manifest.items()):
        got = rv.file(name)
        if got is None:
            problems.append(f"{name}: missing")
        elif got.size != want.size:
            problems.append(f"{name}: {got.size} bytes, the manifest says {want.size}")
    if problems:
        raise DataLoss(f"{store.name}: version {rv.version} is incomplete: "
                       + "; ".join(problems[:5]))
    return Plan(version=rv, metadata=raw, manifest=manifest)


def download(store: Store, p: Plan, dest: Path, progress: Progress | None = None) -> None:
    """Download every file of ``p`` into the (empty) directory ``dest`` and verify them."""
    for name in p.files:
        try:
            check_relative_name(name)
        except InvalidArgument as exc:
            raise DataLoss(f"{store.name}: version {p.version.version}: {exc.message}") from exc
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        store.download(p.version, name, target, progress)
    if p.metadata is not None:  # read by plan(): counted here, with the files
        (dest / METADATA_FILE).write_bytes(p.metadata)
        if progress is not None:
            progress(len(p.metadata))
    if p.manifest is not None:
        try:
            verify_files(dest, p.manifest)
        except DataLoss as exc:
            raise DataLoss(f"{store.name}: version {p.version.version}: "
                           f"{exc.message.split(': ', 1)[-1]}") from exc
        return
    problems = []
    for name in p.files:
        want = p.version.file(name)
        size = (dest / name).stat().st_size
        if want is not None and size != want.size:
            problems.append(f"{name}: {size} bytes, the listing said {want.size}")
    if problems:
        raise DataLoss(f"{store.name}: version {p.version.version}: " + "; ".join(problems))


def push(store: Store, version_dir: Path, version: int | None,
         progress: Progress | None = None) -> int:
    """Publish ``version_dir`` to ``store``: files first, corolla.json (sealed) last."""
    if not version_dir.is_dir():
        raise InvalidArgument(f"{version_dir} is not a directory")
    metadata = None
    if (version_dir / METADATA_FILE).exists():
        read_metadata(version_dir)  # refuse what a server would refuse
        metadata = sealed_metadata_bytes(version_dir)
    files = version_files(version_dir)
    if not files:
        raise InvalidArgument(f"{version_dir} holds no files")
    return store.publish(version, version_dir, files, metadata, progress)


def total_bytes(version_dir: Path) -> int:
    return sum((version_dir / n).stat().st_size for n in version_files(version_dir)) + (
        (version_dir / METADATA_FILE).stat().st_size
        if (version_dir / METADATA_FILE).exists() else 0)


def push_to(version_dir: Path, dest: str, version: int | None = None) -> str:
    """Publish a local version directory to the store ``dest``; its URI (``corolla train
    --output s3://...`` trains into a local base path, then calls this)."""
    from corolla.storage.uri import open_store

    store = open_store(dest)
    try:
        number = push(store, version_dir, version)
    finally:
        store.close()
    return f"{dest.rstrip('/')}/{number}"
