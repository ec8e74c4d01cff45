"""Memory-aware admission against a real server (issue 22.5): requests that do not fit the
budget wait, then get 503 with Retry-After (gRPC UNAVAILABLE); more than the whole budget is
413 (RESOURCE_EXHAUSTED); and in a memory-limited cgroup, the traffic that used to get the
server OOM-killed (8 concurrent 20 MB JSON bodies at 1 GiB) is answered 200 or 503 instead."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from corolla.demo_model import write_demo_version
from corolla.protocols import tensor_proto
from corolla.protos.gen.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

pytestmark = pytest.mark.slow

MiB = 1 << 20


@pytest.fixture
def server(start_corolla: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    write_demo_version(tmp_path / "colours", 1)
    return start_corolla("--model_name=colours", f"--model_base_path={tmp_path / 'colours'}",
                         "--memory_budget_mib=16", "--max_request_body_bytes=67108864",
                         wait_for=("colours",))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _json_body(rows: int) -> bytes:
    x = np.random.default_rng(0).random((rows, 64, 64, 3)).round(4)
    return json.dumps({"instances": x.tolist()}).encode()


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert m is not None, name
    return float(m.group(1))


def test_concurrent_bodies_wait_or_get_503(server) -> None:  # type: ignore[no-untyped-def]
    body = _json_body(24)  # ~2 MB: with its parse, ~10 MiB of the 16 MiB budget
    assert 1.5 * MiB < len(body) < 3 * MiB

    def post(_: int) -> httpx.Response:
        return httpx.post(server.url + "/v1/models/colours:predict", content=body, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(16)))
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= 1
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and "retry later" in r.json()["error"]
    metrics = server.get("/metrics").text
    assert _metric(metrics, "corolla_memory_budget_bytes") == 16 * MiB
    assert _metric(metrics, "corolla_memory_in_use_bytes") == 0  # everything given back
    assert _metric(metrics, "corolla_memory_waits_total") >= 1
    busy = re.search(r'corolla_memory_refusals_total\{reason="busy"\} ([0-9.]+)', metrics)
    assert busy is not None and float(busy.group(1)) == statuses[503]


def test_more_than_the_budget_is_413(server) -> None:  # type: ignore[no-untyped-def]
    r = server.post("/v1/models/colours:predict", content=b"[" * (17 * MiB))
    assert r.status_code == 413 and "memory budget" in r.json()["error"]
    # A progressive JPEG whose decoding needs more than the budget (6 megapixels, 4:4:4).
    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), (200, 30, 30)).save(buf, "JPEG", progressive=True,
                                                        subsampling=0)
    r = server.post("/v1/models/colours:predict", content=buf.getvalue(),
                    headers={"content-type": "image/jpeg"})
    assert r.status_code == 413 and "decoding image 0" in r.json()["error"]
    # gRPC: a 10 MB tensor (counted twice: the message and the tensor read from it).
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "colours"
    tensor_proto.from_numpy(np.zeros((200, 64, 64, 3), np.float32), content=True,
                            out=req.inputs["images"])
    with (grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}",
                                options=[("grpc.max_send_message_length", 64 * MiB)]) as ch,
          pytest.raises(grpc.RpcError) as err):
        prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Small requests still pass.
    r = server.post("/v1/models/colours:predict", json={"instances": np.zeros(
        (1, 64, 64, 3)).tolist()})
    assert r.status_code == 200


# ---- a real memory limit (cgroup) ------------------------------------------------------------


def _memory_cgroup(limit: int) -> Iterator[Path]:
    """A child memory cgroup (v2 or v1) of this process's, or skip the test."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            for c in (controllers.split(",") if hierarchy != "0" else [""]):
                own[c] = path
    name = f"corolla-test-{os.getpid()}"
    for base, knob in ((Path("/sys/fs/cgroup") / own.get("", "/").lstrip("/"), "memory.max"),
                       (Path("/sys/fs/cgroup/memory") / own.get("memory", "/").lstrip("/"),
                        "memory.limit_in_bytes")):
        if not (base / "cgroup.procs").exists():  # not a cgroup (v2 not mounted there)
            continue
        path = base / name
        try:
            path.mkdir()
        except OSError:
            continue
        try:
            (path / knob).write_text(str(limit))
        except OSError:
            path.rmdir()
            continue
        try:
            yield path
        finally:
            for _ in range(50):  # the server's processes leave the cgroup as they exit
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        return
    pytest.skip("no writable memory cgroup here (needs root)")


def _oom_kills(path: Path) -> int:
    for name in ("memory.events", "memory.oom_control"):
        with contextlib.suppress(OSError):
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


def test_big_json_bodies_in_a_1_gib_container(tmp_path: Path) -> None:
    """Eight concurrent 20 MB TF Serving JSON bodies killed a 1 GiB container at 288fb0a
    (four did). With the default budget (half the cgroup limit), every answer is 200 or 503
    and nothing is OOM-killed."""
    import subprocess
    import sys

    x = np.random.default_rng(1).random((16, 224, 224, 3)).round(4)
    body = json.dumps({"instances": x.tolist()}).encode()
    assert 15 * MiB < len(body) < 32 * MiB
    with contextlib.ExitStack() as stack:
        cgroup = stack.enter_context(contextlib.contextmanager(_memory_cgroup)(1 << 30))
        rest, grpc_port = _free_port(), _free_port()
        log = tmp_path / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "corolla", "serve", "--host=127.0.0.1",
                 f"--rest_api_port={rest}", f"--port={grpc_port}"],
                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                preexec_fn=lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid())))
        stack.callback(lambda: (proc.poll() is None and proc.kill(), proc.wait()))
        url = f"http://127.0.0.1:{rest}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        metrics = httpx.get(url + "/metrics").text
        assert _metric(metrics, "corolla_memory_budget_bytes") == 512 * MiB  # derived

        def post(_: int) -> int | str:
            try:
                return httpx.post(url + "/v1/models/flowers:predict", content=body,
                                  timeout=120).status_code
            except httpx.HTTPError as exc:
                return type(exc).__name__

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = Counter(pool.map(post, range(8)))
        assert set(answers) <= {200, 429, 503}, (answers, log.read_text()[-3000:])
        assert proc.poll() is None and _oom_kills(cgroup) == 0
        proc.terminate()
        proc.wait(30)
