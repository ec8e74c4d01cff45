"""Run-time model management under load: config-file polling and gRPC's
HandleReloadConfigRequest add and remove models, a version label moves to a new version once it
is AVAILABLE, and ONNX versions are warmed up before they serve."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from corolla_harness import CorollaProcess, poll
from ops_process import fake_model, predict_body, scrape, serve

from corolla.demo_model import write_demo_version
from corolla.protos.gen.tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
)

pytestmark = pytest.mark.slow


def _config(*models: str, labels: str = "") -> str:
    body = " ".join(
        f'config {{ name: "{m}" base_path: "{m}" {labels if m == "a" else ""} }}' for m in models
    )
    return f"model_config_list {{ {body} }}"


class Load:
    """Client threads calling ``path`` until stopped; every answer must be a 200."""

    def __init__(
        self,
        server: CorollaProcess,
        path: str,
        threads: int = 4,
        check: Callable[[httpx.Response], None] | None = None,
    ) -> None:
        self.server, self.path, self.check = server, path, check
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with self.server.client() as c:
            while not self._stop.is_set():
                try:
                    r = c.post(self.path, json=predict_body())
                    if r.status_code != 200:
                        raise AssertionError(f"{r.status_code} {r.text}")
                    if self.check is not None:
                        self.check(r)
                    self.ok += 1
                except Exception as exc:
                    self.failures.append(repr(exc))
                    return

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    poll(predicate, timeout, "the condition")


def _ready(server: CorollaProcess, model: str) -> int:
    with server.client() as c:
        return c.get("/readyz", params={"model": model}).status_code


@pytest.fixture
def work(tmp_path: Path) -> Path:
    for name in ("a", "b", "c"):
        fake_model(tmp_path / name, 1, predict_seconds=0.005)
    return tmp_path


def test_config_file_polling_adds_and_removes_models_under_load(work: Path) -> None:
    config = work / "models.config"
    config.write_text(_config("a"))
    with serve(
        ["--model_config_file=models.config", "--model_config_file_poll_wait_seconds=0.3"],
        work,
        wait="/readyz",
    ) as s:
        with Load(s, "/v1/models/a:predict") as load:
            config.write_text(_config("a", "b"))
            _wait(lambda: _ready(s, "b") == 200)
            with s.client() as c:
                assert c.post("/v1/models/b:predict", json=predict_body()).status_code == 200
            config.write_text(_config("a"))
            _wait(lambda: _ready(s, "b") == 404)
            with s.client() as c:
                assert c.post("/v1/models/b:predict", json=predict_body()).status_code == 404
            time.sleep(0.3)
        assert not load.failures, load.failures
        assert load.ok > 50


def test_grpc_reload_config_adds_and_removes_models_under_load(work: Path) -> None:
    from google.protobuf import text_format

    def reload(stub: model_service_pb2_grpc.ModelServiceStub, text: str) -> None:
        req = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(text.replace('base_path: "', f'base_path: "{work}/'), req.config)
        resp = stub.HandleReloadConfigRequest(req, timeout=30)
        assert resp.status.error_code == 0, resp.status.error_message

    (work / "models.config").write_text(_config("a"))
    with (
        serve(["--model_config_file=models.config"], work, wait="/readyz") as s,
        grpc.insecure_channel(s.grpc_target) as ch,
    ):
        stub = model_service_pb2_grpc.ModelServiceStub(ch)
        with Load(s, "/v1/models/a:predict") as load:
            reload(stub, _config("a", "c"))
            assert _ready(s, "c") == 200
            reload(stub, _config("a"))
            _wait(lambda: _ready(s, "c") == 404)
        assert not load.failures, load.failures


def test_version_label_moves_only_to_an_available_version(work: Path) -> None:
    fake_model(work / "a", 1, offset=100.0, predict_seconds=0.005)
    config = work / "models.config"
    stable = 'version_labels { key: "stable" value: %d }'
    all_versions = "model_version_policy { all {} }"
    config.write_text(_config("a", labels=f"{all_versions} {stable % 1}"))
    seen: set[float] = set()

    def offset(r: httpx.Response) -> None:
        seen.add(r.json()["predictions"][0]["outputs"][0] - 2.0)

    with serve(
        [
            "--model_config_file=models.config",
            "--model_config_file_poll_wait_seconds=0.3",
            "--file_system_poll_wait_seconds=0.3",
        ],
        work,
        wait="/readyz",
    ) as s:
        with Load(s, "/v1/models/a/labels/stable:predict", check=offset) as load:
            time.sleep(0.3)
            # Version 2 loads slowly; the label is moved at once but must keep serving 1
            # until 2 is AVAILABLE.
            fake_model(work / "a", 2, offset=200.0, load_seconds=1.5, predict_seconds=0.005)
            config.write_text(_config("a", labels=f"{all_versions} {stable % 2}"))
            _wait(lambda: 200.0 in seen or bool(load.failures))
            time.sleep(0.3)
        assert not load.failures, load.failures
        assert seen == {100.0, 200.0}


def test_resource_preserving_policy_unloads_first(work: Path) -> None:
    fake_model(work / "a", 1, offset=1.0)
    with serve(
        [
            "--model_name=a",
            f"--model_base_path={work / 'a'}",
            "--file_system_poll_wait_seconds=0.2",
            "--version_policy_mode=resource_preserving",
        ],
        work,
        wait="/readyz",
    ) as s:
        fake_model(work / "a", 2, offset=2.0, load_seconds=1.0)
        with s.client() as c:
            # With memory for one version only, version 1 goes away before 2 is AVAILABLE.
            _wait(lambda: c.get("/readyz").status_code == 503, timeout=10)
            _wait(lambda: c.get("/readyz").status_code == 200, timeout=10)
            r = c.post("/v1/models/a:predict", json=predict_body())
            assert r.json()["predictions"][0]["outputs"][0] == 2.0 + 2.0


def test_onnx_versions_are_warmed_up_before_serving(tmp_path: Path) -> None:
    write_demo_version(tmp_path / "colours", 1, size=16)
    with (
        serve(
            ["--model_name=colours", f"--model_base_path={tmp_path / 'colours'}"],
            tmp_path,
            wait="/readyz",
        ) as s,
        s.client() as c,
    ):
        m = scrape(c.get("/metrics").text)
        key = (
            f":tensorflow:serving:model_warmup_latency_count{{model_path="
            f'"{tmp_path / "colours" / "1"}",status="OK"}}'
        )
        assert m[key] == 1
        # Warmup runs are not traffic.
        assert not any(
            k.startswith(":tensorflow:serving:runtime_latency_count") and v for k, v in m.items()
        )
    assert "warmed up" in s.log()
