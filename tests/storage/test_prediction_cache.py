"""The prediction cache's keys, values and backends (memory, redis-server, memcached)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from storage_servers import Outage, memcached_server, needs

from corolla.demo_model import write_demo_version
from corolla.prediction_cache import (
    MemoryBackend,
    PredictionCache,
    PredictionCacheOptions,
    decode_outputs,
    deterministic,
    encode_outputs,
    open_backend,
    request_key,
    version_fingerprint,
)


@pytest.fixture(scope="module")
def memcached_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    needs("memcached")
    with memcached_server(tmp_path_factory.mktemp("memcached")) as port:
        yield port


def key(**over: object) -> bytes | None:
    base: dict[str, object] = dict(
        model="m", version=1, fingerprint="f", signature="serving_default", output_filter=(),
        inputs={"images": np.array([b"jpeg-bytes"], dtype=object)})
    base.update(over)
    return request_key(**base)  # type: ignore[arg-type]


def test_keys_separate_everything_that_changes_the_answer() -> None:
    k = key()
    assert k is not None and k == key()
    others = [key(model="n"), key(version=2), key(fingerprint="g"), key(signature="other"),
              key(output_filter=("scores",)),
              key(inputs={"images": np.array([b"jpeg-bytez"], dtype=object)}),
              key(inputs={"images": np.array([b"jpeg-", b"bytes"], dtype=object)}),
              key(inputs={"x": np.zeros((1, 4), np.float32)}),
              key(inputs={"x": np.zeros((4, 1), np.float32)}),
              key(inputs={"x": np.zeros((1, 4), np.float64)})]
    assert len({k, *others}) == len(others) + 1
    assert key(inputs={"x": np.array(["text"], dtype=object)}) is None  # not bytes: no key


def test_outputs_round_trip() -> None:
    outputs = {"probabilities": np.random.default_rng(0).random((3, 5), np.float32),
               "classes": np.arange(3, dtype=np.int64), "scalar": np.float64(2.5)}
    data = encode_outputs(outputs)
    assert data is not None
    back = decode_outputs(data)
    for name, value in outputs.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == np.asarray(value).dtype
    assert encode_outputs({"s": np.array([b"x"], dtype=object)}) is None


def test_determinism_is_read_from_the_graph(tmp_path: Path) -> None:
    demo = Path(write_demo_version(str(tmp_path / "m"), 1, 16))
    assert deterministic("onnx", demo, "model.onnx")
    assert not deterministic("tensorflow", demo, "model.onnx")
    node = helper.make_node("RandomNormalLike", ["x"], ["y"])
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "random.onnx"))
    assert not deterministic("onnx", tmp_path, "random.onnx")
    fp = version_fingerprint(demo)
    (demo / "corolla.json").write_text((demo / "corolla.json").read_text() + " ")
    assert version_fingerprint(demo) != fp


def test_memory_backend_is_an_lru_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    b = MemoryBackend(max_bytes=10)
    b.set(b"a", b"12345", 60)
    b.set(b"b", b"12345", 60)
    assert b.get(b"a") == b"12345"  # a is now the most recent
    b.set(b"c", b"123", 60)  # evicts b, the least recently used
    assert b.get(b"b") is None and b.get(b"a") == b"12345" and b.get(b"c") == b"123"
    b.set(b"huge", b"x" * 11, 60)
    assert b.get(b"huge") is None
    import corolla.prediction_cache as pc

    now = pc.time.monotonic()
    monkeypatch.setattr(pc.time, "monotonic", lambda: now + 61)
    assert b.get(b"a") is None  # expired


@pytest.mark.parametrize("kind", ["memory", "redis", "memcached"])
async def test_backends_hit_and_miss(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "redis":
        url = f"redis://127.0.0.1:{request.getfixturevalue('redis_port')}/0"
    elif kind == "memcached":
        url = f"memcached://127.0.0.1:{request.getfixturevalue('memcached_port')}"
    else:
        url = "memory:16"
    cache = PredictionCache(PredictionCacheOptions(url=url, ttl_seconds=30,
                                                   timeout_seconds=2.0))
    k = key(model=f"m-{kind}")
    assert k is not None
    assert await cache.get("m", k) is None
    outputs = {"p": np.array([[0.25, 0.75]], np.float32)}
    cache.put("m", k, outputs)
    for _ in range(200):  # network writes are not awaited by put
        got = await cache.get("m", k)
        if got is not None:
            break
        await asyncio.sleep(0.01)
    assert got is not None
    np.testing.assert_array_equal(got["p"], outputs["p"])
    assert cache.counts[("m", "hit")] == 1 and cache.counts[("m", "miss")] >= 1
    if kind == "redis":
        ttl = cache.backend._client.pttl(k)  # type: ignore[attr-defined]
        assert 0 < ttl <= 30_000
    cache.close()


async def test_an_outage_is_an_error_not_a_failure(redis_port: int) -> None:
    relay = Outage(redis_port)
    cache = PredictionCache(PredictionCacheOptions(
        url=f"redis://127.0.0.1:{relay.port}/0", timeout_seconds=0.5))
    k = key(model="outage")
    assert k is not None
    cache.put("m", k, {"p": np.ones(2, np.float32)})
    for _ in range(200):  # the write lands before the store goes away
        if await cache.get("m", k) is not None:
            break
        await asyncio.sleep(0.01)
    assert cache.counts[("m", "hit")] == 1
    relay.stop()
    assert await cache.get("m", k) is None
    assert cache.counts[("m", "error")] == 1
    # The breaker: the next lookups do not wait on the dead backend.
    assert await cache.get("m", k) is None
    assert cache.counts[("m", "error")] == 2
    cache.close()


def test_bad_urls() -> None:
    from corolla.errors import InvalidArgument

    for url in ("memory:0", "memory:x", "memcached://nohost", "ftp://x"):
        with pytest.raises(InvalidArgument):
            open_backend(PredictionCacheOptions(url=url))
