"""``redis://[user:password@]host:port[/db]/prefix`` (and ``rediss://``, TLS): Redis as a store.

Keys share the hash tag ``{prefix}`` (one cluster slot, so one MULTI/EXEC covers them):

- ``corolla:{prefix}:versions``: a set of published version numbers;
- ``corolla:{prefix}:<version>:manifest``: JSON ``corolla.redis/v1``: every file of the version
  (corolla.json included) with its size, SHA-256 and the SHA-256 of each chunk;
- ``corolla:{prefix}:<version>:<upload>:<file index>:<chunk index>``: the bytes, in chunks of
  ``CHUNK_BYTES`` (Redis caps a value at 512 MB, and a big value blocks the server while it
  moves).

Publishing writes the chunks first (with a one-day expiry, so an upload that dies leaves nothing
behind for long), then one MULTI/EXEC persists them, sets the manifest, adds the version to the
set and announces it on the ``corolla:{prefix}:announce`` channel: a reader sees the whole
version or nothing, and subscribed servers poll at once. Every chunk is verified when read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from corolla.errors import CorollaError, DataLoss, InvalidArgument
from corolla.storage.base import (
    Progress,
    RemoteFile,
    RemoteVersion,
    StoreNotFound,
    StoreUnavailable,
    check_new_version,
    missing_extra,
    redact,
)

log = logging.getLogger("corolla.storage.redis")

CHUNK_BYTES = 4 << 20
UPLOAD_TTL = 86400  # seconds an unfinished upload's chunks live
FORMAT = "corolla.redis/v1"


def parse_redis_uri(uri: str) -> tuple[str, str]:
    """(connection URL with the db, prefix)."""
    parts = urlsplit(uri)
    segments = [s for s in parts.path.split("/") if s]
    db = "0"
    if len(segments) > 1 and segments[0].isdigit():
        db, segments = segments[0], segments[1:]
    if not segments:
        raise InvalidArgument(f"{uri}: no key prefix (redis://host:port[/db]/prefix)")
    prefix = "/".join(segments)
    if any(c in prefix for c in "{}"):
        raise InvalidArgument(f"{uri}: the prefix may not contain braces")
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, "")), prefix


class RedisStore:
    def __init__(self, uri: str, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.uri = uri.rstrip("/")
        self.name = redact(self.uri)  # for messages: no password
        url, self.prefix = parse_redis_uri(self.uri)
        try:
            import redis
        except ImportError as exc:
            raise missing_extra("redis", "redis", exc) from exc
        self._redis_mod: Any = redis
        self._client: Any = redis.Redis.from_url(url, socket_timeout=10,
                                                 socket_connect_timeout=5)
        self.chunk_bytes = chunk_bytes
        self._manifests: dict[tuple[int, str], dict[str, Any]] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ---- keys and errors ---------------------------------------------------------------------

    def _k(self, *parts: object) -> str:
        return ":".join(["corolla", "{" + self.prefix + "}", *map(str, parts)])

    @property
    def channel(self) -> str:
        return self._k("announce")

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CorollaError:
            raise
        except self._redis_mod.exceptions.RedisError as exc:
            raise StoreUnavailable(f"{self.name}: {what}: {exc}") from exc

    # ---- reading -----------------------------------------------------------------------------

    def _manifest_doc(self, raw: bytes | None, version: int) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            for f in doc["files"]:
                str(f["name"]), int(f["size"]), str(f["sha256"]), list(f["chunks"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataLoss(f"{self.name}: version {version}: malformed manifest ({exc})") from exc
        return dict(doc)

    def list_versions(self) -> dict[int, RemoteVersion]:
        members = self._call("listing", self._client.smembers, self._k("versions"))
        versions = sorted(int(m) for m in members if m.isdigit() and int(m) > 0)
        if not versions:
            raise StoreNotFound(f"{self.name}: no versions under this prefix")
        raws = self._call("listing", self._client.mget,
                          [self._k(v, "manifest") for v in versions])
        out: dict[int, RemoteVersion] = {}
        for v, raw in zip(versions, raws, strict=True):
            doc = self._manifest_doc(raw, v)
            if doc is None:
                continue  # deleted between the two reads
            rv = RemoteVersion(version=v, files=tuple(
                RemoteFile(name=str(f["name"]), size=int(f["size"]), etag=str(f["sha256"]))
                for f in doc["files"]))
            self._manifests[(v, rv.fingerprint)] = doc
            out[v] = rv
        return out

    def _entry(self, version: RemoteVersion, name: str) -> tuple[str, int, dict[str, Any]]:
        doc = self._manifests.get((version.version, version.fingerprint))
        if doc is None:
            raise StoreNotFound(f"{self.name}: version {version.version} changed; list again")
        for index, f in enumerate(doc["files"]):
            if f["name"] == name:
                return str(doc["upload"]), index, f
        raise StoreNotFound(f"{self.name}: version {version.version} has no file {name}")

    def _chunks(self, version: RemoteVersion, name: str) -> Iterable[bytes]:
        upload, index, f = self._entry(version, name)
        for i, want in enumerate(f["chunks"]):
            data = self._call(f"get {name}", self._client.get,
                              self._k(version.version, upload, index, i))
            if data is None:
                raise DataLoss(f"{self.name}: version {version.version}: {name} chunk {i} "
                               "is missing")
            if hashlib.sha256(data).hexdigest() != want:
                raise DataLoss(f"{self.name}: version {version.version}: {name} chunk {i} "
                               "does not match its checksum")
            yield data

    def download(self, version: RemoteVersion, name: str, dest: Path,
                 progress: Progress | None = None) -> None:
        with dest.open("wb") as out:
            for data in self._chunks(version, name):
                out.write(data)
                if progress is not None:
                    progress(len(data))

    def read_bytes(self, version: int, name: str) -> bytes:
        listing = self.list_versions()
        if version not in listing:
            raise StoreNotFound(f"{self.name}: no version {version}")
        return b"".join(self._chunks(listing[version], name))

    # ---- writing -----------------------------------------------------------------------------

    def publish(self, version: int | None, source_dir: Path, files: Iterable[str],
                metadata: bytes | None, progress: Progress | None = None) -> int:
        upload = uuid.uuid4().hex[:12]
        entries: list[dict[str, Any]] = []
        chunk_keys: list[str] = []
        # Chunks go under a placeholder version until the number is known: number them
        # after the transaction would need a copy, so pick the number now and check it again
        # inside the transaction.
        number = self._next_number(version)
        names = list(files) + (["corolla.json"] if metadata is not None else [])
        for index, name in enumerate(names):
            chunks: Iterable[bytes] = (
                [metadata[i:i + self.chunk_bytes]
                 for i in range(0, len(metadata), self.chunk_bytes)]
                if name == "corolla.json" and metadata is not None
                else self._read_chunks(source_dir / name))
            entries.append(self._put_chunks(number, upload, index, name, chunks, chunk_keys,
                                            progress))
        manifest = json.dumps({"format": FORMAT, "upload": upload,
                               "chunk_bytes": self.chunk_bytes, "files": entries}).encode()
        self._commit(number, version is None, manifest, chunk_keys)
        return number

    def _put_chunks(self, number: int, upload: str, index: int, name: str,
                    chunks: Iterable[bytes], keys: list[str],
                    progress: Progress | None) -> dict[str, Any]:
        """Write one file's chunks (a few in flight at a time); its manifest entry."""
        h, size, sums, queued = hashlib.sha256(), 0, [], 0
        pipe = self._client.pipeline(transaction=False)
        for i, data in enumerate(chunks):
            key = self._k(number, upload, index, i)
            pipe.set(key, data, ex=UPLOAD_TTL)
            keys.append(key)
            h.update(data)
            size += len(data)
            queued += len(data)
            sums.append(hashlib.sha256(data).hexdigest())
            if len(pipe) >= 4:
                self._call(f"put {name}", pipe.execute)
                if progress is not None:
                    progress(queued)
                queued = 0
        self._call(f"put {name}", pipe.execute)
        if progress is not None and queued:
            progress(queued)
        return {"name": name, "size": size, "sha256": h.hexdigest(), "chunks": sums}

    def _read_chunks(self, path: Path) -> Iterable[bytes]:
        with path.open("rb") as f:
            while data := f.read(self.chunk_bytes):
                yield data

    def _members(self) -> list[int]:
        members = self._call("listing", self._client.smembers, self._k("versions"))
        return [int(m) for m in members if m.isdigit()]

    def _next_number(self, version: int | None) -> int:
        return check_new_version(self._members(), version)

    def _commit(self, number: int, any_number: bool, manifest: bytes,
                chunk_keys: list[str]) -> None:
        redis = self._redis_mod
        key_versions = self._k("versions")
        with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    self._call("publish", pipe.watch, key_versions)
                    taken = [int(m) for m in self._call("publish", pipe.smembers, key_versions)
                             if m.isdigit()]
                    if number in taken:
                        if not any_number:
                            raise redis.exceptions.ResponseError(
                                f"version {number} was published meanwhile")
                        raise _Taken
                    pipe.multi()
                    for key in chunk_keys:
                        pipe.persist(key)
                    pipe.set(self._k(number, "manifest"), manifest)
                    pipe.sadd(key_versions, number)
                    pipe.publish(self.channel, str(number))
                    self._call("publish", pipe.execute)
                    return
                except redis.exceptions.WatchError:
                    continue
                except _Taken:
                    # Someone took the number while the chunks were written: rename them.
                    new = check_new_version(taken, None)
                    chunk_keys = self._move_chunks(number, new, chunk_keys)
                    number = new
                    pipe.reset()

    def _move_chunks(self, old: int, new: int, keys: list[str]) -> list[str]:
        out = []
        for key in keys:
            target = key.replace(self._k(old) + ":", self._k(new) + ":", 1)
            self._call("publish", self._client.rename, key, target)
            out.append(target)
        return out

    def delete_version(self, version: int) -> None:
        listing = self.list_versions()
        if version not in listing:
            raise StoreNotFound(f"{self.name}: no version {version}")
        doc = self._manifests[(version, listing[version].fingerprint)]
        with self._client.pipeline(transaction=True) as pipe:
            pipe.srem(self._k("versions"), version)
            pipe.delete(self._k(version, "manifest"))
            self._call("delete", pipe.execute)
        keys = [self._k(version, doc["upload"], index, i)
                for index, f in enumerate(doc["files"]) for i in range(len(f["chunks"]))]
        for start in range(0, len(keys), 256):
            self._call("delete", self._client.delete, *keys[start:start + 256])

    # ---- announcements -----------------------------------------------------------------------

    def watch(self, notify: Callable[[], None]) -> None:
        if self._watcher is not None:
            return
        self._watcher = threading.Thread(target=self._listen, args=(notify,), daemon=True,
                                         name=f"redis-watch-{self.prefix}")
        self._watcher.start()

    def _listen(self, notify: Callable[[], None]) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                backoff = 1.0
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        notify()
            except self._redis_mod.exceptions.RedisError as exc:
                log.debug("%s: announcements unavailable (%s); polling only until it is back",
                          self.uri, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                pubsub.close()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self._client.close()


class _Taken(Exception):
    pass
