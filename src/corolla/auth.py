"""API keys (bearer tokens) shared by the REST and gRPC frontends.

Keys come from a file and/or a list given by the CLI (read from an environment variable there).
The file has one key per line, optionally followed by its scope: the models it may call, or
``@admin``::

    # comments and blank lines are ignored
    s3cr3t-key-for-everything
    k3y-for-two-models   flowers,birds
    another-full-key     *
    0p3rat0r-key         @admin

Only an ``@admin`` key may change the server's configuration through the API (gRPC
``HandleReloadConfigRequest``, which can unload every model); it may also call every model.
Keys for every model (no scope, ``*``, or from the environment) are client keys: they predict,
they do not reconfigure.

Several keys may be valid at once (rotation: add the new key, roll out clients, remove the old
one). The file is re-read when it changes (:meth:`KeyStore.watch`); a broken file keeps the keys
in force and logs the error. Presented tokens are hashed and compared with every stored digest
by :func:`hmac.compare_digest`, without an early exit, so the time taken does not depend on
which key (or how much of one) matched. A store with no keys refuses everything (fail closed).

Only SHA-256 digests of the keys are kept in memory. The store is replaced by one assignment,
so readers on the event loop never see half a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from corolla.errors import InvalidArgument, PermissionDenied, Unauthenticated

log = logging.getLogger("corolla.auth")

# A comment starts with '#' at the beginning of a line or after whitespace (keys have none).
_COMMENT = re.compile(r"(^|\s)#.*$")


ADMIN_SCOPE = "@admin"


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    digest: bytes
    models: frozenset[str] | None  # None: every model
    key_id: str  # first hex digits of the digest, for logs
    admin: bool = False  # may change the configuration (HandleReloadConfigRequest)

    def allows(self, model: str | None) -> bool:
        return model is None or self.models is None or model in self.models


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


def make_key(token: str, models: Iterable[str] | None = None) -> ApiKey:
    """A key for ``models`` (None or ``*``: every model); ``[ADMIN_SCOPE]``: an admin key."""
    if not token or any(c.isspace() for c in token):
        raise InvalidArgument("an API key must be non-empty and contain no whitespace")
    d = _digest(token)
    ms = None if models is None else frozenset(models)
    admin = ms is not None and ADMIN_SCOPE in ms
    if admin:
        assert ms is not None
        if ms - {ADMIN_SCOPE, "*"}:
            raise InvalidArgument(
                f"an {ADMIN_SCOPE} key may call every model: list no "
                f"models beside it, got {','.join(sorted(ms))}"
            )
        ms = None
    if ms is not None and "*" in ms:
        ms = None
    if ms is not None and any(m.startswith("@") for m in ms):
        raise InvalidArgument(
            f"unknown scope {min(m for m in ms if m.startswith('@'))} "
            f"(the one scope is {ADMIN_SCOPE})"
        )
    return ApiKey(digest=d, models=ms, key_id=d.hex()[:8], admin=admin)


def parse_keys_text(text: str, source: str = "keys file") -> list[ApiKey]:
    keys = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        parts = line.split(None, 1)
        models = None
        if len(parts) == 2:
            models = [m.strip() for m in parts[1].split(",") if m.strip()]
            if not models:
                raise InvalidArgument(f"{source}:{lineno}: empty model list")
        try:
            keys.append(make_key(parts[0], models))
        except InvalidArgument as exc:
            raise InvalidArgument(f"{source}:{lineno}: {exc.message}") from exc
    return keys


class KeyStore:
    """Keys from a file (re-read when it changes) and a static list.

    A change is seen from the file's mtime, size and inode (a Kubernetes Secret volume swaps a
    symlink: a new inode). Some mounts serve new contents without changing those (Cloud Run's
    Secret Manager volumes fetch the latest version on each read), so the contents are also
    re-read every ``reread_seconds`` whatever the metadata says.
    """

    def __init__(self, *, path: str | None = None, static: Iterable[str] = (),
                 reread_seconds: float = 60.0) -> None:  # fmt: skip
        self.path = path
        self.reread_seconds = reread_seconds
        self._static = [make_key(t) for t in static]
        self._stamp: tuple[int, int, int] | None = None
        self._read_at = -math.inf
        self._file_keys: tuple[ApiKey, ...] = ()
        self._keys: tuple[ApiKey, ...] = tuple(self._static)
        if path is not None:
            self.reload(strict=True)

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        return self._keys

    def _file_stamp(self) -> tuple[int, int, int]:
        assert self.path is not None
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, strict: bool = False) -> bool:
        """Re-read the file; True if the keys changed. Errors raise when ``strict``."""
        if self.path is None:
            return False
        now = time.monotonic()
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp and now - self._read_at < self.reread_seconds:
                return False
            self._read_at = now
            keys = tuple(parse_keys_text(Path(self.path).read_text(encoding="utf-8"),
                                         self.path))  # fmt: skip
        except (OSError, UnicodeDecodeError, InvalidArgument) as exc:
            msg = exc.message if isinstance(exc, InvalidArgument) else str(exc)
            if strict:
                raise InvalidArgument(f"API keys file {self.path}: {msg}") from exc
            log.error("API keys file %s: %s (keeping the keys in force)", self.path, msg)
            return False
        self._stamp = stamp
        if keys == self._file_keys and self._keys[len(self._static) :] == keys and not strict:
            return False  # re-read, nothing changed
        self._file_keys = keys
        self._keys = (*self._static, *keys)
        log.info(
            "API keys loaded from %s: %d key(s), %d admin",
            self.path,
            len(keys),
            sum(k.admin for k in keys),
        )
        return True

    async def watch(self, interval: float, stop: asyncio.Event) -> None:
        """Re-read the file when it changes, every ``interval`` seconds, until ``stop``."""
        if self.path is None or interval <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if not stop.is_set():
                await asyncio.to_thread(self.reload)

    def authenticate(self, token: str | bytes | None) -> ApiKey:
        """The key matching ``token``; Unauthenticated when there is none."""
        if not token:
            raise Unauthenticated(
                "Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        d = _digest(token)
        found = None
        for key in self._keys:  # no early exit: constant time in the position of the match
            if hmac.compare_digest(d, key.digest):
                found = key
        if found is None:
            raise Unauthenticated("Invalid API key")
        return found

    def authorize(self, token: str | bytes | None, model: str | None) -> ApiKey:
        key = self.authenticate(token)
        if not key.allows(model):
            raise PermissionDenied(f"This API key may not call model {model}")
        return key


def bearer_token(authorization: str | None, api_key: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, else an ``X-API-Key`` value."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return api_key.strip() if api_key else None
