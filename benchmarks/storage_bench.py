"""Storage figures for docs/benchmarks.md: push to AVAILABLE, cold against warm restarts.

Starts its own store servers on free loopback ports (moto's S3 server, redis-server) and runs
``corolla serve`` as a real process on the embedded default model pushed there:

- ``push``: seconds from the start of ``corolla push`` of version N+1 to the server reporting
  it AVAILABLE (and the push alone), for S3 (polled every --file_system_poll_wait_seconds,
  default 1 s) and Redis (announced on pub/sub);
- ``cache``: photos/s for one photo sent over and over (REST JSON, base64, wrk at 8
  connections) without the prediction cache, with ``memory`` and with Redis;
- ``restart``: seconds from process start to /readyz 200 with an empty cache (cold: download,
  verify, load) and with the cache of the previous run (warm: a listing, then load); and the
  storage part alone, in process (until the source offers the version's local path).

Run: ``.venv/bin/python benchmarks/storage_bench.py [--repeat 3] [--part push|restart|cache]``
(needs corolla[storage], moto[server], redis-server, wrk and the flower photos). Prints
Markdown. The machine is shared: compare figures from one run, not across runs.
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


PHOTOS = Path("/work/shared/datasets/flower_photos")


@contextlib.contextmanager
def serve(base: str, cache: Path, log: Path, extra: tuple[str, ...] = ()
          ) -> Iterator[tuple[str, float]]:
    """A running server; yields (url, seconds from spawn to ready)."""
    port = free_port()
    start = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corolla", "serve", "--host=127.0.0.1", "--port=0",
             f"--rest_api_port={port}", "--model_name=flowers", f"--model_base_path={base}",
             f"--model_cache_dir={cache}", *extra], stdout=out, stderr=subprocess.STDOUT)
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


def repeated_photo(work: Path, redis_port: int, seconds: int, repeat: int) -> None:
    """photos/s for one photo over and over, without and with the prediction cache."""
    import base64
    import json
    import re

    photo = sorted((PHOTOS / "daisy").glob("*.jpg"))[0]
    body = json.dumps({"instances": [{"b64": base64.b64encode(photo.read_bytes()).decode()}]})
    bodies = work / "bodies"
    bodies.write_bytes(f"{len(body)}\n{body}".encode())
    lua = HERE / "harness" / "bench.lua"
    variants = {"no cache": (), "memory": ("--prediction_cache=memory",),
                "Redis": (f"--prediction_cache=redis://127.0.0.1:{redis_port}/0",)}
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeat):
        for name, extra in variants.items():
            with serve(str(MODEL.parent), work / "unused", work / "serve.log", extra) as (url,
                                                                                         _s):
                predict = f"{url}/v1/models/flowers:predict"
                for secs in (2, seconds):  # a warm-up run, then the measured one
                    out = subprocess.run(
                        ["wrk", "-t1", "-c8", f"-d{secs}s", "-s", str(lua), predict, "--",
                         str(bodies), "application/json"], check=True, capture_output=True,
                        text=True).stdout
                res = json.loads(re.search(r"WRK_JSON (.*)", out).group(1))  # type: ignore[union-attr]
                assert sum(res["errors"].values()) == 0, res
                rates[name].append(res["requests"] / (res["duration_us"] / 1e6))
    base = statistics.median(rates["no cache"])
    print(f"\nOne photo ({photo.name}, {photo.stat().st_size} bytes) over and over: REST JSON "
          f"base64, wrk 8 connections, {seconds} s per run, {repeat} runs, median photos/s.\n")
    print("| prediction cache | photos/s | vs no cache |")
    print("|---|---|---|")
    for name, xs in rates.items():
        print(f"| {name} | {statistics.median(xs):.0f} (min {min(xs):.0f}, max {max(xs):.0f}) "
              f"| {statistics.median(xs) / base:.2f}x |")


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} (min {min(xs):.2f}, max {max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--part", choices=["all", "push", "restart", "cache"], default="all")
    ap.add_argument("--seconds", type=int, default=10, help="per wrk run (--part cache)")
    args = ap.parse_args()
    part = args.part
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
            if part in ("all", "cache"):
                repeated_photo(work, redis_port, args.seconds, args.repeat)
            if part in ("all", "push"):
                print("\n| store | push → AVAILABLE s | of which push s |")
                print("|---|---|---|")
                for name, base in stores.items():
                    totals, pushes = push_to_available(base, work, args.repeat)
                    print(f"| {name} | {fmt(totals)} | {fmt(pushes)} |")
            if part not in ("all", "restart"):
                return
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
