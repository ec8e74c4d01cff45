"""Every store against its real server: publish, list, download verified, delete, refuse."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from corolla.demo_model import write_demo_version
from corolla.errors import Code, CorollaError
from corolla.model_dir import METADATA_FILE, read_metadata
from corolla.model_publish import verify_files
from corolla.storage import transfer
from corolla.storage.base import StoreNotFound
from corolla.storage.uri import open_store

KINDS = ["local", "s3", "gs", "redis"]


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    return Path(write_demo_version(str(tmp_path / "src"), 1, 16))


@pytest.mark.parametrize("kind", KINDS)
def test_publish_list_fetch_delete(kind: str, store_uri: Callable[[str], str],
                                   version_dir: Path, tmp_path: Path) -> None:
    uri = store_uri(kind)
    store = open_store(uri)
    try:
        with pytest.raises(StoreNotFound):
            store.list_versions()  # empty: an error, never an empty answer
        assert transfer.push(store, version_dir, None) == 1
        assert transfer.push(store, version_dir, None) == 2
        assert transfer.push(store, version_dir, 7) == 7
        with pytest.raises(CorollaError, match="already exists"):
            transfer.push(store, version_dir, 7)
        listed = store.list_versions()
        assert sorted(listed) == [1, 2, 7]
        plan = transfer.plan(store, listed[2])
        assert plan.manifest is not None and set(plan.manifest) == {
            p.relative_to(version_dir).as_posix() for p in version_dir.rglob("*")
            if p.is_file() and p.name != METADATA_FILE}
        dest = tmp_path / "copy" / "2"
        dest.mkdir(parents=True)
        transfer.download(store, plan, dest)
        verify_files(dest, read_metadata(dest).files)
        assert (dest / "model.onnx").read_bytes() == (version_dir / "model.onnx").read_bytes()
        store.delete_version(2)
        assert sorted(store.list_versions()) == [1, 7]
        with pytest.raises(StoreNotFound):
            store.delete_version(2)
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_corrupt_object_is_refused(kind: str, store_uri: Callable[[str], str],
                                   version_dir: Path, tmp_path: Path) -> None:
    """A file rewritten after publication (same size, other bytes) fails verification."""
    uri = store_uri(kind)
    store = open_store(uri)
    transfer.push(store, version_dir, None)
    data = bytearray((version_dir / "model.onnx").read_bytes())
    data[100] ^= 0xFF
    store._put_bytes(store.key(1, "model.onnx"), bytes(data))  # type: ignore[attr-defined]
    plan = transfer.plan(store, store.list_versions()[1])
    dest = tmp_path / "copy"
    dest.mkdir()
    with pytest.raises(CorollaError) as e:
        transfer.download(store, plan, dest)
    assert e.value.code == Code.DATA_LOSS and "model.onnx: SHA-256" in e.value.message


def test_redis_chunks_are_checksummed(store_uri: Callable[[str], str], version_dir: Path,
                                      tmp_path: Path) -> None:
    from corolla.storage.redis_store import RedisStore

    store = RedisStore(store_uri("redis"), chunk_bytes=128)
    transfer.push(store, version_dir, None)
    rv = store.list_versions()[1]
    keys = sorted(k.decode() for k in store._client.keys(store._k(1, "*")))
    chunks = [k for k in keys if not k.endswith(":manifest")]
    size = (version_dir / "model.onnx").stat().st_size
    assert len(chunks) > size // 128  # several chunks, none over the chunk size
    assert all(store._client.strlen(k) <= 128 for k in chunks)
    assert all(store._client.ttl(k) == -1 for k in chunks)  # persisted at publication
    doc = store._manifests[(1, rv.fingerprint)]
    index = [f["name"] for f in doc["files"]].index("model.onnx")
    victim = store._k(1, doc["upload"], index, len(doc["files"][index]["chunks"]) - 1)
    value = bytearray(store._client.get(victim))
    value[0] ^= 0xFF
    store._client.set(victim, bytes(value))
    plan = transfer.plan(store, rv)
    dest = tmp_path / "copy"
    dest.mkdir()
    with pytest.raises(CorollaError, match="does not match its checksum") as e:
        transfer.download(store, plan, dest)
    assert e.value.code == Code.DATA_LOSS
    store.close()


def test_redis_upload_is_invisible_until_its_transaction(
        store_uri: Callable[[str], str], version_dir: Path) -> None:
    from corolla.storage.redis_store import RedisStore

    store = RedisStore(store_uri("redis"), chunk_bytes=4096)
    seen: list[list[int]] = []
    reader = RedisStore(store.uri)

    def progress(n: int) -> None:  # mid-upload: chunks are there, the version is not
        try:
            seen.append(sorted(reader.list_versions()))
        except StoreNotFound:
            seen.append([])
        keys = store._client.keys(store._k(1, "*"))
        assert keys and all(store._client.ttl(k) > 0 for k in keys)  # expire if abandoned

    transfer.push(store, version_dir, None, progress)
    assert seen and all(s == [] for s in seen)
    assert sorted(reader.list_versions()) == [1]
    assert all(store._client.ttl(k) == -1 for k in store._client.keys(store._k(1, "*")))
    store.close()
    reader.close()


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_boto(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in ("boto3", "botocore"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_boto)
    with pytest.raises(CorollaError) as e:
        open_store("s3://bucket/models/m")
    assert "corolla[s3]" in e.value.message and "\n" not in e.value.message


def test_messages_never_show_credentials() -> None:
    from corolla.storage.uri import redact

    assert redact("redis://user:s3cret@host:6379/0/m") == "redis://user:***@host:6379/0/m"
    assert redact("rediss://:s3cret@host/m") == "rediss://:***@host/m"
    assert redact("https://h/m.tar.gz?X-Amz-Signature=abc") == "https://h/m.tar.gz?…"
    assert redact("s3://bucket/models") == "s3://bucket/models"


def test_redis_error_messages_hide_the_password() -> None:
    from storage_servers import free_port

    from corolla.storage.redis_store import RedisStore

    store = RedisStore(f"redis://user:s3cret@127.0.0.1:{free_port()}/0/m")
    with pytest.raises(CorollaError) as e:
        store.list_versions()
    assert "s3cret" not in e.value.message and "user:***@" in e.value.message
    assert e.value.code == Code.UNAVAILABLE


def test_gcs_that_refuses_connections_fails_a_call_within_seconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # google-cloud-storage retries a refused connection for 120 s by default: each listing of a
    # dead store took two minutes, and `fetch-model --retries 0` as long (found from outside).
    # Corolla retries above the client (the source's backoff, fetch-model's --retries).
    import time

    from storage_servers import free_port

    from corolla.storage.base import StoreUnavailable

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    store = open_store("gs://bucket/models/m")
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.list_versions()
    assert time.monotonic() - t0 < 60
    store.close()
