"""``corolla serve`` as a real process on an S3 base path (moto): publish under REST load with
no failed request, status and metrics, then a restart on the warm cache downloads nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from storage_servers import metric, serve

from corolla.cli import main as corolla_main
from corolla.demo_model import write_demo_version

pytestmark = pytest.mark.slow


def test_s3_publish_under_load_then_warm_restart(store_uri: Callable[[str], str],
                                                 tmp_path: Path) -> None:
    uri = store_uri("s3")
    demo = Path(write_demo_version(str(tmp_path / "src"), 1, 16))
    assert corolla_main(["push", str(demo), uri]) == 0
    args = ["--model_name=m", f"--model_base_path={uri}",
            f"--model_cache_dir={tmp_path / 'cache'}", "--file_system_poll_wait_seconds=0.2"]
    body = {"instances": [[[[0.5, 0.5, 0.5]] * 16] * 16]}
    with serve(args, tmp_path) as (url, _log):
        assert metric(url, "corolla_storage_download_bytes_total") > 0
        stop, codes = threading.Event(), []

        def load() -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    codes.append(c.post(f"{url}/v1/models/m:predict", json=body).status_code)

        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            assert corolla_main(["push", str(demo), uri]) == 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status = httpx.get(f"{url}/v1/models/m", timeout=5).json()
                if [s["version"] for s in status["model_version_status"]] == ["2"]:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(status)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert len(codes) > 10 and set(codes) == {200}
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
    # A restart on the same cache: serving again without downloading a byte.
    with serve(args, tmp_path) as (url, log):
        assert httpx.post(f"{url}/v1/models/m:predict", json=body, timeout=10).status_code == 200
        assert metric(url, "corolla_storage_download_bytes_total") == 0
        assert metric(url, "corolla_model_cache_versions") == 1
        assert "downloaded and verified" not in log.read_text()


def test_rest_workers_share_one_cached_copy(store_uri: Callable[[str], str],
                                            tmp_path: Path) -> None:
    """Two processes (--rest_workers=2) on one Redis base path and one cache: both serve, and
    the version is downloaded once (the second process waits for the first's copy)."""
    uri = store_uri("redis")
    demo = Path(write_demo_version(str(tmp_path / "src"), 1, 16))
    assert corolla_main(["push", str(demo), uri]) == 0
    size = sum(p.stat().st_size for p in demo.rglob("*") if p.is_file())
    args = ["--model_name=m", f"--model_base_path={uri}", "--rest_workers=2",
            f"--model_cache_dir={tmp_path / 'cache'}"]
    with serve(args, tmp_path) as (url, _log):
        body = {"instances": [[[[0.5, 0.5, 0.5]] * 16] * 16]}
        with httpx.Client(timeout=10) as c:
            for _ in range(20):  # new connections: the kernel spreads them over both
                assert c.post(f"{url}/v1/models/m:predict", json=body,
                              headers={"Connection": "close"}).status_code == 200
        assert metric(url, "corolla_storage_download_bytes_total") == size
        assert metric(url, 'corolla_storage_downloads_total{model_name="m",result="ok"}') == 1
        assert len(list((tmp_path / "cache").glob("*/*/1"))) == 1
