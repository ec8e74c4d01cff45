"""Storage figures for docs/benchmarks.md: push to AVAILABLE, cold against warm restarts.

Starts its own store servers on free loopback ports (moto's S3 server, redis-server) and runs
``corolla serve`` as a real process on the embedded default model pushed there:

- ``push``: seconds from the start of ``corolla push`` of version N+1 to the server reporting
  it AVAILABLE (and the push alone), for S3 (polled every --file_system_poll_wait_seconds,
  default 1 s) and Redis (announced on pub/sub);
- ``restart``: seconds from process start to /readyz 200 with an empty cache (cold: download,
  verify, load) and with the cache of the previous run (warm: a listing, then load); and the
  storage part alone, in process (until the source offers the version's local path).

Run: ``.venv/bin/python benchmarks/storage_bench.py [--repeat 3]`` (needs corolla[storage],
moto[server] and redis-server). Prints Markdown. The machine is shared: compare figures from one
run, not across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "storage"))
from storage_servers import free_port, moto_s3, redis_server  # noqa: E402

MODEL = HERE.parent / "src" / "corolla" / "default_model" / "flowers" / "1"


@contextlib.contextmanager
def serve(base: str, cache: Path, log: Path) -> Iterator[tuple[str, float]]:
    """A running server; yields (url, seconds from spawn to ready)."""
    port = free_port()
    start = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corolla", "serve", "--host=127.0.0.1", "--port=0",
             f"--rest_api_port={port}", "--model_name=flowers", f"--model_base_path={base}",
             f"--model_cache_dir={cache}"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.02)
        yield url, time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(60)


def push(base: str) -> int:
    out = subprocess.run([sys.executable, "-m", "corolla", "push", str(MODEL), base],
                         check=True, capture_output=True, text=True)
    return int(out.stdout.strip().rsplit("/", 1)[1])


def push_to_available(base: str, work: Path, repeat: int) -> tuple[list[float], list[float]]:
    push(base)
    totals, pushes = [], []
    with serve(base, work / f"cache-{uuid.uuid4().hex[:6]}", work / "serve.log") as (url, _s):
        for _ in range(repeat):
            t0 = time.perf_counter()
            version = push(base)
            pushes.append(time.perf_counter() - t0)
            while True:
                status = httpx.get(f"{url}/v1/models/flowers", timeout=5).json()
                states = {s["version"]: s["state"] for s in status["model_version_status"]}
                if states.get(str(version)) == "AVAILABLE":
                    break
                time.sleep(0.01)
            totals.append(time.perf_counter() - t0)
    return totals, pushes


def restarts(base: str, work: Path, repeat: int) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for _ in range(repeat):
        cache = work / f"cache-{uuid.uuid4().hex[:6]}"
        with serve(base, cache, work / "serve.log") as (_url, seconds):
            cold.append(seconds)
        with serve(base, cache, work / "serve.log") as (_url, seconds):
            warm.append(seconds)
        shutil.rmtree(cache)
    return cold, warm


def source_ready(base: str, work: Path, repeat: int) -> tuple[list[float], list[float]]:
    """The storage part alone, in process: seconds until the remote source offers the version
    (list, download, verify) with an empty cache, and with a warm one (list, find)."""
    from concurrent.futures import ThreadPoolExecutor

    from corolla.config import ModelConfig
    from corolla.storage.cache import ModelCache
    from corolla.storage.source import RemoteSource
    from corolla.storage.uri import open_store

    def once(cache: ModelCache) -> float:
        store = open_store(base)
        with ThreadPoolExecutor(2) as pool:
            src = RemoteSource(config=ModelConfig(name="flowers", base_path=base), store=store,
                               cache=cache, fetch_executor=pool)
            t0 = time.perf_counter()
            while not src.poll_once().aspired:
                time.sleep(0.005)
            seconds = time.perf_counter() - t0
            src.close()
        return seconds

    cold, warm = [], []
    for _ in range(repeat):
        cache = ModelCache(work / f"src-cache-{uuid.uuid4().hex[:6]}")
        cold.append(once(cache))
        warm.append(once(cache))
        shutil.rmtree(cache.root)
    return cold, warm


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} (min {min(xs):.2f}, max {max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    print(f"Default model version: {size / 1e6:.1f} MB in {len(list(MODEL.iterdir()))} files; "
          f"{args.repeat} runs each, median (min, max) seconds; {os.cpu_count()} cores.\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_REGION": "us-east-1"}
        os.environ.update(env)
        with moto_s3(work) as endpoint, redis_server(work) as redis_port:
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            import boto3

            boto3.client("s3").create_bucket(Bucket="bench")
            stores = {"S3 (moto, polled every 1 s)": "s3://bench/models/flowers",
                      "Redis (pub/sub announcement)":
                          f"redis://127.0.0.1:{redis_port}/0/bench/flowers"}
            print("| store | push → AVAILABLE s | of which push s |")
            print("|---|---|---|")
            for name, base in stores.items():
                totals, pushes = push_to_available(base, work, args.repeat)
                print(f"| {name} | {fmt(totals)} | {fmt(pushes)} |")
            print("\n| store | version offered, cold cache s | warm cache s | cold/warm |")
            print("|---|---|---|---|")
            for name, base in stores.items():
                cold, warm = source_ready(base, work, args.repeat)
                ratio = statistics.median(cold) / statistics.median(warm)
                print(f"| {name.split(' (')[0]} | {fmt(cold)} | {fmt(warm)} | {ratio:.0f}x |")
            print("\n| base path | process start → ready, cold cache s | warm cache s |")
            print("|---|---|---|")
            cold, warm = restarts(stores["S3 (moto, polled every 1 s)"], work, args.repeat)
            print(f"| S3 (moto) | {fmt(cold)} | {fmt(warm)} |")
            cold, warm = restarts(f"redis://127.0.0.1:{redis_port}/0/bench/flowers", work,
                                  args.repeat)
            print(f"| Redis | {fmt(cold)} | {fmt(warm)} |")
            local = str(MODEL.parent)
            with serve(local, work / "unused", work / "serve.log") as (_u, seconds):
                print(f"| local disk (reference) | {seconds:.2f} | – |")


if __name__ == "__main__":
    main()
