"""Which store a base path names: ``s3://``, ``gs://``, ``http(s)://``, ``redis(s)://`` or a
local directory (a plain path or ``file://``)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from corolla.errors import InvalidArgument
from corolla.storage.base import Store, redact

__all__ = ["redact"]

REMOTE_SCHEMES = ("s3", "gs", "http", "https", "redis", "rediss")


def scheme_of(base_path: str) -> str:
    head, sep, _rest = base_path.partition("://")
    return head.lower() if sep else ""


def is_remote(base_path: str) -> bool:
    return scheme_of(base_path) in REMOTE_SCHEMES


def check_uri(base_path: str) -> str:
    """``base_path`` if it names a supported store; INVALID_ARGUMENT otherwise."""
    scheme = scheme_of(base_path)
    if scheme and scheme != "file" and scheme not in REMOTE_SCHEMES:
        raise InvalidArgument(f"base path {base_path!r}: unsupported scheme {scheme}:// "
                              "(supported: s3, gs, http, https, redis, rediss, file)")
    if scheme in ("s3", "gs") and not base_path.split("://", 1)[1].split("/", 1)[0]:
        raise InvalidArgument(f"base path {base_path!r}: no bucket name")
    return base_path


def store_key(uri: str) -> str:
    """A short, stable, file-system-safe name for a store URI (credentials hashed away)."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    tail = "".join(c if c.isalnum() or c in "-_." else "_"
                   for c in uri.rsplit("/", 1)[-1])[:40]
    return f"{scheme_of(uri) or 'file'}-{tail}-{digest}"


def open_store(uri: str, state_dir: Path | None = None) -> Store:
    """The store for ``uri``. Client libraries are imported here, by the store that needs
    them (a missing one is a one-line FAILED_PRECONDITION naming the extra)."""
    scheme = scheme_of(check_uri(uri))
    if scheme == "s3":
        from corolla.storage.s3 import S3Store

        return S3Store(uri)
    if scheme == "gs":
        from corolla.storage.gcs import GcsStore

        return GcsStore(uri)
    if scheme in ("http", "https"):
        from corolla.storage.http_archive import HttpArchiveStore

        state = state_dir or Path(tempfile.mkdtemp(prefix="corolla-http-"))
        return HttpArchiveStore(uri, state)
    if scheme in ("redis", "rediss"):
        from corolla.storage.redis_store import RedisStore

        return RedisStore(uri)
    from corolla.storage.local import LocalStore

    return LocalStore(uri.removeprefix("file://"))


_CLIENTS = {"s3": ("boto3", "s3"), "gs": ("google.cloud.storage", "gcs"),
            "redis": ("redis", "redis"), "rediss": ("redis", "redis")}


def require_client(uri: str) -> None:
    """Fail now, in one line naming the extra, if the store's client library is missing."""
    import importlib

    from corolla.storage.base import missing_extra

    scheme = scheme_of(check_uri(uri))
    if scheme in _CLIENTS:
        module, extra = _CLIENTS[scheme]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise missing_extra(scheme, extra, exc) from exc
