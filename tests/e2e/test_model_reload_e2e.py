"""Version management end to end: hot reload, broken versions, config polling, policies, labels,
missing base paths, TF Serving's environment contract and fail-fast start-up errors.

Every server here runs as a real ``corolla serve`` process; states are awaited by polling
``GET /v1/models/<name>`` with a bounded deadline.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from corolla.demo_model import metadata as demo_metadata
from corolla.demo_model import write_demo_version
from corolla.model_dir import write_metadata
from corolla.model_publish import stage_version

pytestmark = pytest.mark.slow

SIZE = 16
FAST_POLL = "--file_system_poll_wait_seconds=0.1"


def jpeg(rgb: tuple[int, int, int] = (230, 20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), rgb).save(buf, "JPEG")
    return buf.getvalue()


RED = jpeg()


def predict_version(server: Any, path: str = "/v1/models/colors") -> str:
    """POST a red JPEG to ``path:predict``; the version that answered."""
    r = server.post(f"{path}:predict", content=RED, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == "red"
    return str(r.json()["model_version"])


def write_broken_version(base: Path, version: int) -> None:
    """A version whose metadata is fine but whose graph is garbage."""
    with stage_version(base, version) as staged:
        (staged.path / "model.onnx").write_bytes(b"this is not an ONNX graph")
        write_metadata(staged.path, demo_metadata(SIZE))


# ---- hot reload -----------------------------------------------------------------------------


class Load:
    """Threads that keep sending predictions and record (status, version) of every answer."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.results: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(
                        "/v1/models/colors:predict",
                        content=RED,
                        headers={"Content-Type": "image/jpeg"},
                    )
                    entry = (r.status_code, r.json().get("model_version", r.text))
                except Exception as exc:  # a refused connection is a failure too
                    entry = (0, repr(exc))
                with self.lock:
                    self.results.append(entry)

    def count(self, version: str) -> int:
        with self.lock:
            return sum(1 for status, v in self.results if status == 200 and v == version)

    def finish(self) -> list[tuple[int, str]]:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self.results


def test_hot_reload_under_load(tmp_path: Path, start_corolla: Any, wait: Any) -> None:
    base = tmp_path / "colors"
    write_demo_version(base, 1, size=SIZE)
    server = start_corolla(
        "--model_name=colors", f"--model_base_path={base}", FAST_POLL, wait_for=("colors",)
    )
    load = Load(server.url)
    try:
        wait(lambda: load.count("1") >= 5, 20, "requests answered by version 1")
        write_demo_version(base, 2, size=SIZE)
        # Version 2 becomes AVAILABLE, then version 1 unloads.
        server.wait_until(
            lambda: server.states("colors") == {"2": "AVAILABLE"}, "version 2 alone AVAILABLE"
        )
        seen = load.count("2")
        wait(lambda: load.count("2") >= seen + 5, 20, "requests answered by version 2")
    finally:
        results = load.finish()
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    assert {v for _, v in results} == {"1", "2"}
    # After the swap, only version 2 answers.
    assert predict_version(server) == "2"
    log = server.log()
    assert "version 2 is AVAILABLE" in log and "version 1 unloaded" in log
    assert log.index("version 2 is AVAILABLE") < log.index("version 1 unloaded")


def test_broken_version_keeps_the_old_one_serving(tmp_path: Path, start_corolla: Any) -> None:
    base = tmp_path / "colors"
    write_demo_version(base, 1, size=SIZE)
    write_demo_version(base, 2, size=SIZE)
    server = start_corolla(
        "--model_name=colors",
        f"--model_base_path={base}",
        FAST_POLL,
        "--max_num_load_retries=1",
        "--load_retry_interval_micros=50000",
        wait_for=("colors",),
    )
    assert server.states("colors") == {"2": "AVAILABLE"}
    write_broken_version(base, 3)

    def failed() -> dict[str, Any] | None:
        status = server.status("colors") or {}
        return status if status.get("3", {}).get("state") == "END" else None

    status = server.wait_until(failed, "version 3 to fail")
    assert status["2"]["state"] == "AVAILABLE"
    error = status["3"]["status"]
    assert error["error_code"] != "OK"
    assert "could not load ONNX graph" in error["error_message"]
    assert "load attempt 2/2 failed" in server.log()  # one retry, then END
    assert predict_version(server) == "2"
    r = server.get("/v1/models/colors/versions/3")
    assert r.status_code == 200 and r.json()["model_version_status"][0]["state"] == "END"
    r = server.post(
        "/v1/models/colors/versions/3:predict", content=RED, headers={"Content-Type": "image/jpeg"}
    )
    assert r.status_code == 404
    # A good version 4 still takes over.
    write_demo_version(base, 4, size=SIZE)
    server.wait_until(
        lambda: (
            server.states("colors").get("4") == "AVAILABLE" and "2" not in server.states("colors")
        ),
        "version 4 to replace 2",
    )
    assert predict_version(server) == "4"


# ---- configuration --------------------------------------------------------------------------


def test_config_file_polling_adds_and_removes_models(
    tmp_path: Path,
    start_corolla: Any,
    models_config: Callable[..., str],
    write_config: Callable[[Path, str], None],
) -> None:
    for name in ("a", "b"):
        write_demo_version(tmp_path / name, 1, size=SIZE)
    a = {"name": "a", "base_path": tmp_path / "a"}
    b = {"name": "b", "base_path": tmp_path / "b"}
    config = tmp_path / "models.config"
    write_config(config, models_config(a))
    server = start_corolla(
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=0.2",
        wait_for=("a",),
    )
    assert server.get("/v1/models/b").status_code == 404

    write_config(config, models_config(a, b))
    server.wait_available("b")
    assert predict_version(server, "/v1/models/b") == "1"

    # A broken file is reported and ignored: both models keep serving.
    write_config(config, "model_config_list { config { name: 'a' ")
    server.wait_log("model config file:")
    assert server.states("a") == {"1": "AVAILABLE"} and server.states("b") == {"1": "AVAILABLE"}

    write_config(config, models_config(b))
    server.wait_until(lambda: server.get("/v1/models/a").status_code == 404, "a to be removed")
    r = server.post("/v1/models/a:predict", content=RED, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 404
    assert predict_version(server, "/v1/models/b") == "1"


def test_version_policies_and_labels(
    tmp_path: Path,
    start_corolla: Any,
    models_config: Callable[..., str],
    write_config: Callable[[Path, str], None],
) -> None:
    base = tmp_path / "colors"
    for v in (1, 2, 3):
        write_demo_version(base, v, size=SIZE)
    models = [
        {"name": "latest2", "base_path": base, "policy": ("latest", 2)},
        {"name": "every", "base_path": base, "policy": "all"},
        {
            "name": "pinned",
            "base_path": base,
            "policy": ("specific", [1, 3]),
            "labels": {"stable": 1, "canary": 3},
        },
        {"name": "plain", "base_path": base},
    ]
    config = tmp_path / "models.config"
    write_config(config, models_config(*models))
    server = start_corolla(
        f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0.2"
    )
    expected = {
        "latest2": {"2", "3"},
        "every": {"1", "2", "3"},
        "pinned": {"1", "3"},
        "plain": {"3"},
    }
    for name, versions in expected.items():
        server.wait_until(
            lambda n=name, vs=versions: server.states(n) == dict.fromkeys(vs, "AVAILABLE"),
            f"{name} at {versions}",
        )
    assert predict_version(server, "/v1/models/every/versions/1") == "1"
    assert predict_version(server, "/v1/models/every") == "3"  # latest of the loaded ones
    assert predict_version(server, "/v1/models/latest2/versions/2") == "2"
    assert (
        server.post(
            "/v1/models/latest2/versions/1:predict",
            content=RED,
            headers={"Content-Type": "image/jpeg"},
        ).status_code
        == 404
    )
    # Labels.
    assert predict_version(server, "/v1/models/pinned/labels/stable") == "1"
    assert predict_version(server, "/v1/models/pinned/labels/canary") == "3"
    status = server.get("/v1/models/pinned/labels/stable").json()["model_version_status"]
    assert [s["version"] for s in status] == ["1"]
    r = server.post(
        "/v1/models/pinned/labels/beta:predict", content=RED, headers={"Content-Type": "image/jpeg"}
    )
    assert r.status_code == 400 and "beta" in r.json()["error"]
    # Moving a label in the config file takes effect without any load.
    models[2]["labels"] = {"stable": 3}
    write_config(config, models_config(*models))

    def stable_is_3() -> bool:
        r = server.post(
            "/v1/models/pinned/labels/stable:predict",
            content=RED,
            headers={"Content-Type": "image/jpeg"},
        )
        return r.status_code == 200 and r.json()["model_version"] == "3"

    server.wait_until(stable_is_3, "label stable to move to version 3")
    r = server.post(
        "/v1/models/pinned/labels/canary:predict",
        content=RED,
        headers={"Content-Type": "image/jpeg"},
    )
    assert r.status_code == 400 and "label: canary" in r.json()["error"]


def test_missing_base_path_keeps_serving(
    tmp_path: Path, start_corolla: Any, models_config: Callable[..., str]
) -> None:
    good, late, never = tmp_path / "good", tmp_path / "late", tmp_path / "never"
    write_demo_version(good, 1, size=SIZE)
    config = tmp_path / "models.config"
    config.write_text(
        models_config(
            {"name": "good", "base_path": good},
            {"name": "late", "base_path": late},
            {"name": "never", "base_path": never},
        )
    )
    server = start_corolla(f"--model_config_file={config}", FAST_POLL, wait_for=("good",))
    r = server.get("/v1/models/late")
    assert r.status_code == 404 and f"Could not find base path {late}" in r.json()["error"]
    assert predict_version(server, "/v1/models/good") == "1"
    # The base path appears: the model loads.
    write_demo_version(late, 1, size=SIZE)
    server.wait_available("late")
    # A base path that vanishes (a flaky mount) does not unload what serves.
    good.rename(tmp_path / "gone")
    server.wait_log(f"Could not find base path {good}")
    assert server.states("good") == {"1": "AVAILABLE"}
    assert predict_version(server, "/v1/models/good") == "1"
    # SIGTERM: a clean, prompt exit, even with a model that never loaded.
    assert server.stop() == 0


def test_tf_serving_environment_contract(tmp_path: Path, start_corolla: Any) -> None:
    write_demo_version(tmp_path / "models" / "flowers", 1, size=SIZE)
    server = start_corolla(
        env={"MODEL_NAME": "flowers", "MODEL_BASE_PATH": str(tmp_path / "models")},
        wait_for=("flowers",),
    )
    assert predict_version(server, "/v1/models/flowers") == "1"


# ---- fail fast ------------------------------------------------------------------------------


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corolla", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=60,
    )


def test_unknown_flag_fails_fast(tmp_path: Path) -> None:
    for args in (
        ["serve", "--model_name=m", f"--model_base_path={tmp_path}", "--no_such_flag=1"],
        ["--model_name=m", f"--model_base_path={tmp_path}", "--rest_api_prot=8501"],
    ):
        p = run_cli(args, tmp_path)
        assert p.returncode == 2
        assert "unrecognized arguments" in p.stderr
        assert args[-1].split("=")[0] in p.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("model_config_list { config { name: 'a' base_path: '/a' }", "models.config"),
        ("model_config_list { config { name: 'a' bse_path: '/a' } }", "bse_path"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' } "
            "config { name: 'a' base_path: '/b' } }",
            "configured twice",
        ),
        ("model_config_list { config { name: 'a' } }", "base_path is required"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'caffe' } }",
            "'caffe' is not supported",
        ),
    ],
    ids=["unclosed", "typo", "duplicate", "no-base-path", "platform"],
)
def test_broken_config_fails_fast(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "models.config"
    path.write_text(config)
    p = run_cli(["serve", f"--model_config_file={path}"], tmp_path)
    assert p.returncode == 2, p.stderr
    assert "error" in p.stderr and message in p.stderr and str(path) in p.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model_config_file=/nonexistent/models.config"], "/nonexistent/models.config"),
        (["--model_name=m"], "needs --model_base_path"),
        (["--model_name=m", "--model_base_path=hdfs://namenode/m"], "unsupported scheme hdfs://"),
        (["--batching_parameters_file=/nonexistent/b.txt"], "batching_parameters_file"),
    ],
)
def test_bad_command_line_fails_fast(tmp_path: Path, args: list[str], message: str) -> None:
    p = run_cli(["serve", *args], tmp_path)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
