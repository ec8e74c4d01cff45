"""Fetching public datasets: resumable, verified downloads into a cache, then extraction.

Owns :func:`download` (HTTP(S) with a progress bar; an interrupted transfer resumes from the
partial file with an HTTP ``Range`` request; transient failures retry with exponential backoff;
the result is checked against its SHA-256 before it is renamed into place) and
:func:`fetch_tf_flowers` (the flower_photos archive, extracted once, safely, into the cache).
Standard library only.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class RemoteArchive:
    url: str
    sha256: str
    size: int
    folder: str  # the top-level folder inside the archive


TF_FLOWERS = RemoteArchive(
    url="https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
    # as recorded by tensorflow_datasets (url_checksums/tf_flowers.txt)
    sha256="4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c",
    size=228_813_984,
    folder="flower_photos",
)


class DownloadError(RuntimeError):
    pass


class ChecksumMismatch(DownloadError):
    pass


def default_cache_dir() -> Path:
    return Path(os.environ.get("COROLLA_CACHE", Path.home() / ".cache" / "corolla"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One attempt: append to ``part`` from where it stops. Raises on a short transfer."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the partial file is whole
            return
        raise
    with resp:
        if have and resp.status == 206:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                raise DownloadError(f"server resumed at the wrong offset: {m and m.group(1)}")
            mode = "ab"
        else:  # 200: the server ignored Range; start over
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            part.open(mode) as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size < total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and verify its checksum."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    part = dest.with_name(dest.name + ".part")
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "download of %s failed (%s); retry %d/%d in %.1fs",
                url,
                last,
                attempt,
                retries,
                delay,
            )
            time.sleep(delay)
        resumed = part.exists() and part.stat().st_size > 0
        try:
            _transfer(url, part, timeout_s, progress)
        except (OSError, http.client.HTTPException, DownloadError) as exc:
            if isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500:
                raise DownloadError(f"{url}: HTTP {exc.code}") from exc
            reason = getattr(exc, "reason", None)
            if isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_NONAME:
                # The host name does not exist for this machine's resolver (no network, or
                # a typo): retrying will not help, unlike EAI_AGAIN.
                raise DownloadError(f"{url}: cannot resolve the host name ({reason.strerror}); "
                                    "is this machine offline?") from exc
            last = exc
            continue
        if sha256 is not None:
            got = sha256_file(part)
            if got != sha256:
                part.unlink()
                last = ChecksumMismatch(f"{url}: sha256 {got}, expected {sha256}")
                if resumed:
                    continue  # a resumed file may be spliced wrongly: one clean retry
                raise last
        part.replace(dest)
        return dest
    if isinstance(last, ChecksumMismatch):
        raise last
    raise DownloadError(f"{url}: giving up after {retries + 1} attempts: {last}") from last


def extract(archive: Path, into: Path, folder: str) -> Path:
    """Extract a tar archive once (atomically, via a temporary sibling); return into/folder."""
    target = into / folder
    if target.is_dir():
        return target
    tmp = into / f".extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, .., device files
        (tmp / folder).replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_archive(
    remote: RemoteArchive, cache_dir: Path | None = None, *, progress: bool = True
) -> Path:
    cache = cache_dir or default_cache_dir()
    archive = download(
        remote.url, cache / Path(remote.url).name, sha256=remote.sha256, progress=progress
    )
    return extract(archive, cache, remote.folder)


def fetch_tf_flowers(cache_dir: Path | None = None, *, progress: bool = True) -> Path:
    return fetch_archive(TF_FLOWERS, cache_dir, progress=progress)
