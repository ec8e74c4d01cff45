"""API keys from a Kubernetes Secret volume rotate without a restart.

The kubelet writes a Secret volume the way its AtomicWriter does: the files live in a
timestamped directory, ``..data`` is a symlink to it, and each key file is a symlink through
``..data``; an update writes a new directory and renames a new ``..data`` link over the old one
(one atomic step). The server, started with ``--api_keys_file`` on such a link, must pick up the
new keys (old key 401, new key 200; a new @admin key may reload the configuration) while it
keeps serving, with no restart.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import httpx
import pytest
from corolla_harness import corolla_process

from corolla.demo_model import write_demo_version
from corolla.protos.gen.tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
)

pytestmark = pytest.mark.slow


def _atomic_write(volume: Path, files: dict[str, str], stamp: str) -> None:
    """What the kubelet does on every Secret update (pkg/volume/util/atomic_writer.go)."""
    data = volume / f"..{stamp}"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(data.name)
    os.rename(tmp, volume / "..data")
    for name in files:
        link = volume / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def _status(port: int, key: str) -> int:
    return httpx.get(
        f"http://127.0.0.1:{port}/v1/models/colors", headers={"x-api-key": key}, timeout=10
    ).status_code


def test_secret_volume_rotation_without_restart(tmp_path: Path) -> None:
    write_demo_version(tmp_path / "models" / "colors", 1, size=16)
    volume = tmp_path / "secret"
    volume.mkdir()
    _atomic_write(volume, {"api-keys": "key-one\nops-one @admin\n"}, "2026_01_01_00_00_00.1")
    with corolla_process(
            ["--model_name=colors", f"--model_base_path={tmp_path / 'models' / 'colors'}",
             f"--api_keys_file={volume / 'api-keys'}", "--auth_open_endpoints=health,metrics",
             f"--allowed_model_roots={tmp_path / 'models'}"],
            tmp_path, env={"COROLLA_CPUS": "1"}, wait="/v2/health/ready") as server:
        rest, grpc_port = server.rest_port, server.grpc_port
        assert _status(rest, "key-one") == 200
        assert _status(rest, "key-two") == 401
        # Prometheus scrapes without a key; the API needs one.
        assert httpx.get(f"http://127.0.0.1:{rest}/metrics", timeout=10).is_success

        _atomic_write(volume, {"api-keys": "key-two\nops-two @admin\n"}, "2026_01_02_00_00_00.2")
        deadline = time.monotonic() + 20
        while _status(rest, "key-one") != 401:
            assert time.monotonic() < deadline, "the rotated Secret was not re-read"
            time.sleep(0.2)
        assert _status(rest, "key-two") == 200
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            stub = model_service_pb2_grpc.ModelServiceStub(ch)
            req = model_management_pb2.ReloadConfigRequest()
            for key, code in (("ops-one", grpc.StatusCode.UNAUTHENTICATED),
                              ("key-two", grpc.StatusCode.PERMISSION_DENIED)):  # fmt: skip
                with pytest.raises(grpc.RpcError) as e:
                    stub.HandleReloadConfigRequest(req, metadata=[("x-api-key", key)], timeout=10)
                assert e.value.code() == code
        assert server.alive()  # the same process all along
        assert server.log().count("API keys loaded from") == 2
