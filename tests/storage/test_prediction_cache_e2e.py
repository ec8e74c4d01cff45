"""``corolla serve --prediction_cache`` as a real process: a hit gives the identical answer, a
new version misses, and a cache outage falls back to inference."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from storage_servers import Outage, metric, serve

from corolla.demo_model import write_demo_version

pytestmark = pytest.mark.slow

BODY = {"instances": [[[[0.2, 0.5, 0.9]] * 16] * 16]}


def lookups(url: str, result: str) -> float:
    name = "corolla_prediction_cache_lookups_total"
    return metric(url, f'{name}{{model_name="m",result="{result}"}}')


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_prediction_cache(backend: str, redis_port: int, tmp_path: Path) -> None:
    base = tmp_path / "models" / "m"
    write_demo_version(str(base), 1, 16)
    relay = Outage(redis_port)
    url_arg = (f"redis://127.0.0.1:{relay.port}/0" if backend == "redis" else "memory:16")
    args = ["--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0.2",
            f"--prediction_cache={url_arg}", "--prediction_cache_timeout_ms=500"]
    with serve(args, tmp_path) as (url, _log), httpx.Client(timeout=10) as c:
        predict = f"{url}/v1/models/m:predict"
        first = c.post(predict, json=BODY)
        assert first.status_code == 200 and lookups(url, "miss") == 1
        for _ in range(100):  # the write is not awaited by the answer
            second = c.post(predict, json=BODY)
            if lookups(url, "hit") >= 1:
                break
            time.sleep(0.02)
        assert second.content == first.content and lookups(url, "hit") == 1
        # Another input misses.
        assert c.post(predict, json={"instances": [[[[0.1, 0.1, 0.1]] * 16] * 16]}
                      ).status_code == 200
        assert lookups(url, "miss") == 2
        # A new version: the same input misses, then hits under version 2.
        misses = lookups(url, "miss")
        write_demo_version(str(base), 2, 16)
        for _ in range(200):
            status = c.get(f"{url}/v1/models/m").json()["model_version_status"]
            if [s["version"] for s in status] == ["2"]:
                break
            time.sleep(0.05)
        third = c.post(predict, json=BODY)
        assert third.status_code == 200 and lookups(url, "miss") == misses + 1
        if backend == "redis":
            relay.stop()  # the cache goes away: answers keep coming, from the model
            errors = lookups(url, "error")
            for _ in range(3):
                r = c.post(predict, json=BODY)
                assert r.status_code == 200 and r.json() == third.json()
            assert lookups(url, "error") >= errors + 1
    relay.stop()
