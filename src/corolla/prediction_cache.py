"""The prediction cache (``--prediction_cache``): answers for inputs a version has seen before.

Opt-in. Backends: ``memory[:MiB]`` (this process, LRU bounded by bytes), ``redis://…`` /
``rediss://…`` and ``memcached://host:port`` (shared by every replica). What is cached is a
version's output tensors for one request, before anything protocol-specific (top-k, JSON,
protobuf) is applied, so one entry serves every protocol and every ``top_k``.

The key (:func:`request_key`) is a SHA-256 over the model name, the version number and the
version's content fingerprint (its corolla.json, which carries the file manifest: a version
replaced in place never shares entries with the old bytes), the signature, the requested
output aliases, and every input's alias, dtype, shape and bytes (encoded images as received).
Entries expire after ``ttl``. Only versions whose answers are deterministic are cached (ONNX
graphs without random operators; see :func:`deterministic`), and only numeric outputs.

Failure never fails a request: a backend that errs or does not answer within ``timeout``
counts an error and the request runs the model; after an error the backend is left alone for
``BREAKER_SECONDS`` (no request waits on a dead cache). Hits, misses and errors are metrics.
Network backends run in a small thread pool of their own, never on the event loop; writes do not
delay the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import struct
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from prometheus_client.metrics_core import Metric

from corolla.errors import InvalidArgument
from corolla.model_dir import METADATA_FILE
from corolla.tensors import Tensors

log = logging.getLogger("corolla.prediction_cache")

BREAKER_SECONDS = 1.0
KEY_PREFIX = b"corolla:pc:v1:"
RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                        "RandomUniformLike", "Multinomial", "Bernoulli"})


@dataclass(frozen=True, kw_only=True)
class PredictionCacheOptions:
    url: str  # memory[:MiB] | redis://... | rediss://... | memcached://host:port
    ttl_seconds: float = 300.0
    timeout_seconds: float = 0.05
    max_entry_bytes: int = 1 << 20  # larger answers are not cached


class Backend(Protocol):
    """Blocking get/set; raising means the backend failed (counted, then ignored)."""

    def get(self, key: bytes) -> bytes | None: ...

    def set(self, key: bytes, value: bytes, ttl: float) -> None: ...

    def close(self) -> None: ...


class MemoryBackend:
    """An LRU dict bounded by the bytes of its values, with per-entry expiry."""

    inline = True  # fast enough to call on the event loop

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires < time.monotonic():
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return value

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        with self._lock:
            if key in self._entries:
                self._drop(key)
            if len(value) > self.max_bytes:
                return
            self._entries[key] = (time.monotonic() + ttl, value)
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        _expires, value = self._entries.pop(key)
        self._bytes -= len(value)

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


class RedisBackend:
    inline = False

    def __init__(self, url: str, timeout: float) -> None:
        try:
            import redis
        except ImportError as exc:
            raise InvalidArgument("--prediction_cache redis:// needs the corolla[redis] extra: "
                                  "pip install 'corolla[redis]'") from exc
        self._client: Any = redis.Redis.from_url(url, socket_timeout=timeout,
                                                 socket_connect_timeout=timeout)

    def get(self, key: bytes) -> bytes | None:
        value = self._client.get(key)
        return None if value is None else bytes(value)

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        self._client.set(key, value, px=max(1, int(ttl * 1000)))

    def close(self) -> None:
        self._client.close()


class MemcachedBackend:
    inline = False

    def __init__(self, url: str, timeout: float) -> None:
        try:
            from pymemcache.client.base import Client
        except ImportError as exc:
            raise InvalidArgument("--prediction_cache memcached:// needs the corolla[memcached] "
                                  "extra: pip install 'corolla[memcached]'") from exc
        hostport = url.split("://", 1)[1].strip("/")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidArgument(f"--prediction_cache {url}: expected memcached://host:port")
        self._client: Any = Client((host, int(port)), connect_timeout=timeout, timeout=timeout,
                                   no_delay=True)
        self._lock = threading.Lock()  # pymemcache's base client is not thread-safe

    @staticmethod
    def _key(key: bytes) -> bytes:
        return key.hex().encode()  # memcached keys: printable, no spaces, <= 250 bytes

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            value = self._client.get(self._key(key))
        return None if value is None else bytes(value)

    def set(self, key: bytes, value: bytes, ttl: float) -> None:
        with self._lock:
            self._client.set(self._key(key), value, expire=max(1, int(ttl)), noreply=False)

    def close(self) -> None:
        self._client.close()


def open_backend(options: PredictionCacheOptions) -> Backend:
    url = options.url
    if url == "memory" or url.startswith("memory:"):
        mib = url.partition(":")[2] or "256"
        if not mib.isdigit() or int(mib) < 1:
            raise InvalidArgument(f"--prediction_cache {url}: expected memory or memory:MiB")
        return MemoryBackend(int(mib) << 20)
    if url.startswith(("redis://", "rediss://")):
        return RedisBackend(url, options.timeout_seconds)
    if url.startswith("memcached://"):
        return MemcachedBackend(url, options.timeout_seconds)
    raise InvalidArgument(f"--prediction_cache {url!r}: expected memory[:MiB], redis://..., "
                          "rediss://... or memcached://host:port")


# ---- keys, values, determinism ---------------------------------------------------------------


def version_fingerprint(path: Path) -> str:
    """What identifies a version's bytes: its corolla.json (with the file manifest), else the
    directory's path and modification time."""
    try:
        return hashlib.sha256((path / METADATA_FILE).read_bytes()).hexdigest()
    except OSError:
        try:
            return f"{path}@{path.stat().st_mtime_ns}"
        except OSError:
            return str(path)


def deterministic(platform: str, path: Path, graph: str) -> bool:
    """Whether a version's answers depend on its inputs only: ONNX graphs without random
    operators. Other platforms are not cached (their graphs are not inspected)."""
    if platform != "onnx":
        return False
    try:
        import onnx

        model = onnx.load(str(path / graph), load_external_data=False)
    except Exception:  # an unreadable graph: do not cache (the runtime loaded it anyway)
        return False
    ops = {n.op_type for n in model.graph.node}
    for fn in model.functions:
        ops.update(n.op_type for n in fn.node)
    return not ops & RANDOM_OPS


def request_key(*, model: str, version: int, fingerprint: str, signature: str,
                output_filter: Sequence[str], inputs: Mapping[str, np.ndarray]) -> bytes | None:
    """The cache key of one request, or None when an input cannot be hashed exactly."""
    h = hashlib.sha256()
    h.update(json.dumps([model, version, fingerprint, signature, sorted(output_filter)]
                        ).encode())
    for alias in sorted(inputs):
        value = np.asarray(inputs[alias])
        h.update(f"\0{alias}\0{value.dtype.str}\0{value.shape}\0".encode())
        if value.dtype == object:
            for item in value.ravel():
                if not isinstance(item, bytes | bytearray | memoryview):
                    return None
                h.update(struct.pack("<Q", len(item)))
                h.update(item)
        else:
            h.update(np.ascontiguousarray(value).data)
    return KEY_PREFIX + h.digest()


def encode_outputs(outputs: Tensors) -> bytes | None:
    """A compact binary form of numeric outputs (None if one is not numeric)."""
    head, bufs = [], []
    for name in sorted(outputs):
        arr = np.ascontiguousarray(outputs[name])
        if arr.dtype == object:
            return None
        head.append([name, arr.dtype.str, list(arr.shape)])
        bufs.append(arr.tobytes())
    header = json.dumps(head).encode()
    return struct.pack("<I", len(header)) + header + b"".join(bufs)


def decode_outputs(data: bytes) -> Tensors:
    (n,) = struct.unpack_from("<I", data)
    head = json.loads(data[4:4 + n])
    out: dict[str, np.ndarray] = {}
    offset = 4 + n
    for name, dtype, shape in head:
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        size = count * dt.itemsize
        out[name] = np.frombuffer(data, dtype=dt, count=count, offset=offset).reshape(shape)
        offset += size
    if offset != len(data):
        raise ValueError("trailing bytes")
    return out


# ---- the cache -------------------------------------------------------------------------------


class PredictionCache:
    def __init__(self, options: PredictionCacheOptions, backend: Backend | None = None) -> None:
        self.options = options
        self.backend = backend if backend is not None else open_backend(options)
        self._inline = bool(getattr(self.backend, "inline", False))
        self._pool = None if self._inline else ThreadPoolExecutor(
            4, thread_name_prefix="prediction-cache")
        self._broken_until = 0.0
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()

    def _count(self, model: str, result: str) -> None:
        with self._lock:
            self.counts[(model, result)] += 1

    def _failed(self, model: str, what: str, exc: BaseException | None) -> None:
        self._count(model, "error")
        if time.monotonic() >= self._broken_until:
            log.warning("prediction cache %s failed (%s); serving without it for %.0f s",
                        what, exc or "timeout", BREAKER_SECONDS)
        self._broken_until = time.monotonic() + BREAKER_SECONDS

    async def get(self, model: str, key: bytes) -> Tensors | None:
        """The cached outputs, or None (a miss, or a backend that failed: counted)."""
        if time.monotonic() < self._broken_until:
            self._count(model, "error")
            return None
        try:
            if self._inline:
                data = self.backend.get(key)
            else:
                loop = asyncio.get_running_loop()
                data = await asyncio.wait_for(
                    loop.run_in_executor(self._pool, self.backend.get, key),
                    self.options.timeout_seconds)
        except Exception as exc:
            self._failed(model, "read", None if isinstance(exc, TimeoutError) else exc)
            return None
        if data is None:
            self._count(model, "miss")
            return None
        try:
            outputs = decode_outputs(data)
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            self._failed(model, "entry", exc)
            return None
        self._count(model, "hit")
        return outputs

    def put(self, model: str, key: bytes, outputs: Tensors) -> None:
        """Store an answer without waiting for the backend (errors are counted)."""
        data = encode_outputs(outputs)
        if data is None or len(data) > self.options.max_entry_bytes:
            return
        if time.monotonic() < self._broken_until:
            return
        if self._inline:
            self.backend.set(key, data, self.options.ttl_seconds)
            return
        assert self._pool is not None

        def write() -> None:
            try:
                self.backend.set(key, data, self.options.ttl_seconds)
            except Exception as exc:
                self._failed(model, "write", exc)

        self._pool.submit(write)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            counts = dict(self.counts)
        m = Metric("corolla_prediction_cache_lookups", "Prediction cache lookups by result: "
                   "hit, miss, error (backend failed or timed out: the model ran).", "counter")
        for (model, result), n in sorted(counts.items()):
            m.add_sample("corolla_prediction_cache_lookups_total",
                         {"model_name": model, "result": result}, n)
        return [m]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()


# ---- composition at load time ----------------------------------------------------------------


class CachedAnswer:
    """A version's answer with the cache in front: same call shape as the answer it wraps."""

    # Inputs larger than this are hashed in a worker thread, not on the event loop.
    INLINE_HASH_BYTES = 256 * 1024

    def __init__(self, inner: Any, cache: PredictionCache, *, model: str, version: int,
                 fingerprint: str) -> None:
        self.inner = inner
        self.cache = cache
        self.model, self.version, self.fingerprint = model, version, fingerprint

    def _key(self, signature: str, filt: tuple[str, ...], inputs: Mapping[str, np.ndarray]
             ) -> bytes | None:
        return request_key(model=self.model, version=self.version,
                           fingerprint=self.fingerprint, signature=signature,
                           output_filter=filt, inputs=inputs)

    async def __call__(self, signature: str, sig: Any, inputs: dict[str, np.ndarray],
                       filt: tuple[str, ...], deadline: float) -> Tensors:
        size = sum(_nbytes(v) for v in inputs.values())
        if size <= self.INLINE_HASH_BYTES:
            key = self._key(signature, filt, inputs)
        else:
            key = await asyncio.to_thread(self._key, signature, filt, inputs)
        if key is None:
            return await self.inner(signature, sig, inputs, filt, deadline)
        hit = await self.cache.get(self.model, key)
        if hit is not None:
            return hit
        outputs: Tensors = await self.inner(signature, sig, inputs, filt, deadline)
        self.cache.put(self.model, key, outputs)
        return outputs


def _nbytes(value: np.ndarray) -> int:
    if value.dtype == object:
        return sum(len(x) for x in value.ravel() if isinstance(x, bytes | bytearray))
    return int(value.nbytes)


def cache_wrapper(cache: PredictionCache) -> Any:
    """The prediction service's ``wrap_answer``: versions whose answers are deterministic get
    the cache in front of their answer; others keep theirs (logged once, at load)."""

    def wrap(loaded: Any, answer: Any) -> Any:
        graphs = {str(loaded.metadata.graph), *map(str, getattr(
            loaded.metadata, "graph_variants", {}).values())}
        if not all(deterministic(loaded.platform, loaded.path, g) for g in graphs):
            log.info("model %s version %d: answers are not cached (not an ONNX graph without "
                     "random operators)", loaded.name, loaded.version)
            return answer
        # The graph variant served changes the answers: it is part of the identity.
        variant = str(getattr(loaded.servable, "graph_variant", "") or "")
        return CachedAnswer(answer, cache, model=loaded.name, version=loaded.version,
                            fingerprint=f"{version_fingerprint(loaded.path)}/{variant}")

    return wrap
