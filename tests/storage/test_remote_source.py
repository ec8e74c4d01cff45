"""The remote source with the real manager and ONNX runtime, against the real store servers:
serve, publish under load, paused uploads, corruption, outages, warm restarts, eviction."""

from __future__ import annotations

import asyncio
import shutil
import tarfile
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from storage_servers import HttpFiles, Outage

from corolla.config import ModelConfig
from corolla.demo_model import write_demo_version
from corolla.errors import Code
from corolla.repository.manager import Manager
from corolla.repository.policy import State
from corolla.runtimes.onnx import OnnxRuntime
from corolla.storage import transfer
from corolla.storage.source import RemoteSource, StorageSources
from corolla.storage.uri import open_store

WAIT = 30.0


class Rig:
    """A manager whose sources are StorageSources over one cache directory."""

    def __init__(self, cache: Path, max_bytes: int = 0) -> None:
        self.sources = StorageSources(str(cache), max_bytes)
        self.pool = ThreadPoolExecutor(2)
        self.manager = Manager(runtimes=[OnnxRuntime()], executor=self.pool,
                               source_factory=self.sources)

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.manager.wait_until(predicate, timeout=WAIT)

    async def poll_until(self, predicate: Callable[[], bool]) -> None:
        """Poll (as the server's timer would) until ``predicate`` holds."""
        for _ in range(int(WAIT / 0.05)):
            await self.manager.poll()
            if predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("condition not reached")

    def serving(self, name: str = "m") -> set[int]:
        entry = self.manager.serving_map.models.get(name)
        return set(entry.versions) if entry else set()

    def status(self, name: str = "m") -> dict[int, tuple[State, Any]]:
        return {s.version: (s.state, s.error) for s in self.manager.statuses(name)}

    def source(self, name: str = "m") -> RemoteSource:
        src = self.manager._models[name].source
        assert isinstance(src, RemoteSource)
        return src

    async def close(self) -> None:
        await asyncio.wait_for(self.manager.close(), WAIT)
        self.sources.close()
        self.pool.shutdown(wait=False)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(max_bytes: int = 0) -> Rig:
        r = Rig(tmp_path / "cache", max_bytes)
        made.append(r)
        return r

    yield make
    for r in made:
        await r.close()


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return Path(write_demo_version(str(tmp_path / "src"), 1, 16))


def push(uri: str, version_dir: Path, version: int | None = None, **kw: Any) -> int:
    store = open_store(uri)
    try:
        return transfer.push(store, version_dir, version, **kw)
    finally:
        store.close()


IMAGES = {"images": np.zeros((1, 16, 16, 3), np.float32)}


def predict(manager: Manager) -> int:
    with manager.serving_map.lease("m") as lv:
        out = lv.servable.predict(IMAGES)
        assert out
        return lv.version


class Load:
    """Two clients sending requests all along; none may fail.

    Each request runs as the server runs one: the lease is taken and returned on the event loop
    (the serving map's contract), and the inference runs in a worker thread while the lease is
    held. A lease taken on another thread may come from a map that the manager has already
    replaced, after the version in it quiesced and closed: a race of that client, not of the
    server (a version the manager has unpublished on the loop gets no new lease).
    """

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.stopping = False
        self.failures: list[BaseException] = []
        self.served: set[int] = set()
        self.tasks: list[asyncio.Task[None]] = []

    async def _run(self) -> None:
        while not self.stopping:
            try:
                with self.manager.serving_map.lease("m") as lv:
                    out = await asyncio.to_thread(lv.servable.predict, IMAGES)
                    assert out
                self.served.add(lv.version)
            except Exception as exc:
                self.failures.append(exc)

    async def __aenter__(self) -> Load:
        self.tasks = [asyncio.ensure_future(self._run()) for _ in range(2)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopping = True
        await asyncio.gather(*self.tasks)


@pytest.mark.parametrize("kind", ["s3", "gs", "redis"])
async def test_serve_and_publish_under_load(kind: str, store_uri: Callable[[str], str],
                                            rig: Callable[..., Rig], demo: Path,
                                            tmp_path: Path) -> None:
    uri = store_uri(kind)
    push(uri, demo)
    r = rig()
    await r.manager.set_configs([ModelConfig(name="m", base_path=uri)])
    await r.poll_until(lambda: r.serving() == {1})
    path = r.manager.serving_map.find("m").path
    assert path.is_relative_to(tmp_path / "cache") and path.name == "1"

    async with Load(r.manager) as load:
        await asyncio.to_thread(push, uri, demo)
        await r.poll_until(lambda: r.serving() == {2})
        await asyncio.sleep(0.2)
    assert load.failures == [] and load.served == {1, 2}
    await r.until(lambda: r.status() == {2: (State.AVAILABLE, None)})  # 1 unloads meanwhile


async def test_paused_upload_is_never_loaded(store_uri: Callable[[str], str],
                                             rig: Callable[..., Rig], demo: Path) -> None:
    uri = store_uri("s3")
    push(uri, demo)
    r = rig()
    await r.manager.set_configs([ModelConfig(name="m", base_path=uri)])
    await r.poll_until(lambda: r.serving() == {1})
    paused, resume = threading.Event(), threading.Event()

    def progress(n: int) -> None:  # after the first file: the upload stops halfway
        paused.set()
        assert resume.wait(WAIT)

    upload = asyncio.ensure_future(asyncio.to_thread(push, uri, demo, progress=progress))
    assert await asyncio.to_thread(paused.wait, WAIT)
    for _ in range(4):  # more polls than the two-poll rule needs
        await r.manager.poll()
        await asyncio.sleep(0.05)
    assert r.serving() == {1}
    state, error = r.status()[2]
    assert state == State.END and "being published" in error.message
    resume.set()
    await upload
    await r.poll_until(lambda: r.serving() == {2})


async def test_corrupt_version_is_refused_and_the_old_one_serves(
        store_uri: Callable[[str], str], rig: Callable[..., Rig], demo: Path) -> None:
    uri = store_uri("s3")
    push(uri, demo)
    r = rig()
    await r.manager.set_configs([ModelConfig(name="m", base_path=uri)])
    await r.poll_until(lambda: r.serving() == {1})
    store = open_store(uri)
    push(uri, demo)
    data = bytearray((demo / "model.onnx").read_bytes())
    data[200] ^= 0xFF
    store._put_bytes(store.key(2, "model.onnx"), bytes(data))  # type: ignore[attr-defined]
    await r.poll_until(lambda: r.status().get(2, (None, None))[1] is not None)
    state, error = r.status()[2]
    assert state == State.END and error.code == Code.DATA_LOSS
    assert "model.onnx: SHA-256" in error.message
    assert r.serving() == {1} and predict(r.manager) == 1
    assert r.sources.stats.downloads[("m", "data_loss")] == 1
    for _ in range(3):  # not fetched again while its files stay the same
        await r.manager.poll()
    assert r.sources.stats.downloads[("m", "data_loss")] == 1
    # Fixed in the store (rewritten): fetched again, verified, loaded.
    store._put_bytes(store.key(2, "model.onnx"), (demo / "model.onnx").read_bytes())  # type: ignore[attr-defined]
    await r.poll_until(lambda: r.serving() == {2})
    store.close()


async def test_store_outage_keeps_serving_and_recovers(
        redis_port: int, rig: Callable[..., Rig], demo: Path) -> None:
    relay = Outage(redis_port)
    uri = f"redis://127.0.0.1:{relay.port}/0/outage/m"
    push(uri, demo)
    r = rig()
    await r.manager.set_configs([ModelConfig(name="m", base_path=uri)])
    await r.poll_until(lambda: r.serving() == {1})
    relay.stop()
    try:
        await r.manager.poll()
        # It keeps serving: error_code stays OK (TF Serving clients check it), the status
        # message says what failed.
        (status,) = r.manager.statuses("m")
        assert status.state == State.AVAILABLE and status.error is None
        assert uri in status.note and predict(r.manager) == 1
        assert r.sources.stats.listings[("m", "error")] >= 1
        # Backing off: polls meanwhile do not ask the store again.
        before = r.sources.stats.listings[("m", "error")]
        await r.manager.poll()
        assert r.sources.stats.listings[("m", "error")] == before
    finally:
        relay.start()
    await r.poll_until(lambda: r.manager.statuses("m")[0].note == "")
    assert r.serving() == {1}
    relay.stop()


async def test_warm_restart_downloads_nothing(store_uri: Callable[[str], str],
                                              rig: Callable[..., Rig], demo: Path) -> None:
    uri = store_uri("s3")
    push(uri, demo)
    first = rig()
    await first.manager.set_configs([ModelConfig(name="m", base_path=uri)])
    await first.poll_until(lambda: first.serving() == {1})
    assert first.sources.stats.download_bytes["m"] > 0
    await first.close()
    second = rig()
    await second.manager.set_configs([ModelConfig(name="m", base_path=uri)])
    await second.until(lambda: second.serving() == {1})  # the first poll suffices
    assert second.sources.stats.download_bytes["m"] == 0
    assert second.sources.stats.downloads == {}


async def test_cache_keeps_only_what_is_aspired_and_respects_its_bound(
        store_uri: Callable[[str], str], rig: Callable[..., Rig], demo: Path,
        tmp_path: Path) -> None:
    uri = store_uri("redis")
    size = transfer.total_bytes(demo)
    push(uri, demo)
    r = rig(max_bytes=int(size * 2.5))
    await r.manager.set_configs([ModelConfig(name="m", base_path=uri)])
    await r.poll_until(lambda: r.serving() == {1})
    for v in (2, 3, 4):
        push(uri, demo)
        await r.poll_until(lambda v=v: r.serving() == {v})
        await r.manager.poll()
        used, entries = r.sources.cache.usage()
        assert entries <= 2 and used <= size * 2.5
    await r.poll_until(lambda: r.sources.cache.usage()[1] == 1)  # unloaded ones pruned
    # A version that cannot fit is refused (reported), the loaded one keeps serving.
    big = tmp_path / "big"
    shutil.copytree(demo, big)
    (big / "padding.bin").write_bytes(b"\0" * (3 * size))
    push(uri, big)
    await r.poll_until(lambda: r.status().get(5, (None, None))[1] is not None)
    assert r.status()[5][1].code == Code.RESOURCE_EXHAUSTED and r.serving() == {4}


async def test_redis_announcement_loads_without_a_timer(
        store_uri: Callable[[str], str], rig: Callable[..., Rig], demo: Path) -> None:
    uri = store_uri("redis")
    push(uri, demo)
    r = rig()
    await r.manager.set_configs([ModelConfig(name="m", base_path=uri)])
    await r.poll_until(lambda: r.serving() == {1})
    await asyncio.sleep(0.3)  # the subscription is made by a thread
    await asyncio.to_thread(push, uri, demo)
    await r.until(lambda: r.serving() == {2})  # no poll called: the announcement did it


async def test_version_without_manifest_waits_for_two_equal_polls(
        store_uri: Callable[[str], str], rig: Callable[..., Rig], demo: Path,
        tmp_path: Path) -> None:
    """A version copied by another tool (no corolla.json manifest) counts as complete once
    two polls in a row see the same files, sizes and etags."""
    uri = store_uri("s3")
    store = open_store(uri)
    for name in ("model.onnx", "corolla.json"):  # uploaded with gsutil/aws s3 cp: unsealed
        store._put_file(store.key(1, name), demo / name, None)  # type: ignore[attr-defined]
    import json

    doc = json.loads((demo / "corolla.json").read_text())
    del doc["files"]
    store._put_bytes(store.key(1, "corolla.json"), json.dumps(doc).encode())  # type: ignore[attr-defined]
    r = rig()
    await r.manager.set_configs([ModelConfig(name="m", base_path=uri)])
    assert r.status() == {1: (State.START, None)}  # seen once: pending
    source = r.source()
    listing = await asyncio.to_thread(source.poll_once)
    assert listing.aspired == () and listing.pending == {1: None}  # second poll: fetching
    await r.poll_until(lambda: r.serving() == {1})
    store.close()


async def test_http_archive(tmp_path: Path, rig: Callable[..., Rig], demo: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    with tarfile.open(site / "model.tar.gz", "w:gz") as t:
        t.add(demo, arcname="3")
    files = HttpFiles(site)
    try:
        uri = files.url("model.tar.gz")
        r = rig()
        await r.manager.set_configs([ModelConfig(name="m", base_path=uri)])
        await r.poll_until(lambda: r.serving() == {3})
        # A new archive holding version 4 replaces it, under load: no request fails.
        async with Load(r.manager) as load:
            with tarfile.open(site / "model.tar.gz.tmp", "w:gz") as t:
                t.add(demo, arcname="4")
            (site / "model.tar.gz.tmp").replace(site / "model.tar.gz")
            await r.poll_until(lambda: r.serving() == {4})
            await asyncio.sleep(0.2)
        assert load.failures == [] and load.served == {3, 4}
        # A corrupt archive (version 5, a file that does not match its manifest) is refused,
        # and version 4 keeps serving although the archive no longer holds it.
        bad = tmp_path / "bad" / "5"
        shutil.copytree(demo, bad)
        data = bytearray((bad / "model.onnx").read_bytes())
        data[-1] ^= 1
        (bad / "model.onnx").write_bytes(bytes(data))
        with tarfile.open(site / "model.tar.gz.tmp", "w:gz") as t:
            t.add(bad, arcname="5")
        (site / "model.tar.gz.tmp").replace(site / "model.tar.gz")
        await r.poll_until(lambda: r.status().get(5, (None, None))[1] is not None)
        assert r.status()[5][1].code == Code.DATA_LOSS
        for _ in range(3):
            await r.manager.poll()
        assert r.serving() == {4} and predict(r.manager) == 4
    finally:
        files.close()


def test_cache_leases_are_per_source(tmp_path: Path) -> None:
    """Two sources of one process share the cache: one's leases never release the other's,
    and nothing leased is pruned."""
    from corolla.storage.cache import ModelCache

    cache = ModelCache(tmp_path / "c")

    def entry(uri: str, fp: str) -> Path:
        return cache.fill(uri, 1, fp, 1, lambda d: (d / "f").write_bytes(b"x"))

    a, b = entry("s3://x/a", "a" * 24), entry("s3://x/b", "b" * 24)
    cache.hold("source-a", {a})
    cache.hold("source-b", {b})
    cache.hold("source-a", set())  # a lets go of its entry: b's stays leased
    assert cache.prune("s3://x/b", set()) == [] and b.exists()
    assert cache.prune("s3://x/a", set()) == [a.parent] and not a.exists()
    other = ModelCache(tmp_path / "c")  # another process's view (its own file descriptors)
    assert other.prune("s3://x/b", set()) == [] and b.exists()
    cache.release("source-b")
    assert other.prune("s3://x/b", set()) == [b.parent]
