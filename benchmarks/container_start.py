#!/usr/bin/env python3
"""Cold start of the Corolla container: `docker run` to ready (the figure behind Cloud Run's
scale-from-zero advice in docs/deploy.md).

Starts the image N times the way Cloud Run runs it (PORT set, read-only root, 2 CPUs, the
embedded flowers model or a mounted model directory) and times, from the `docker run` call:
the process answering /v2/health/live, and /v2/health/ready turning 200 (models AVAILABLE).
The image pull and the platform's own sandbox start are not in it. Loopback only.

  python3 benchmarks/container_start.py                  # corolla:dev, 5 runs
  python3 benchmarks/container_start.py --image corolla:0.1.0 --runs 10 --cpus 1
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import urllib.error
import urllib.request


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def one_start(image: str, cpus: str, extra: list[str]) -> tuple[float, float]:
    t0 = time.monotonic()
    cid = subprocess.run(
        ["docker", "run", "-d", "--rm", "--read-only", "--tmpfs", "/tmp", f"--cpus={cpus}",
         "-e", "PORT=8080", "-e", f"COROLLA_CPUS={cpus}", "-p", "127.0.0.1::8080", *extra, image],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        port = subprocess.run(["docker", "port", cid, "8080/tcp"], capture_output=True, text=True,
                              check=True).stdout.splitlines()[0].rsplit(":", 1)[1]  # fmt: skip
        live = ready = 0.0
        deadline = t0 + 120
        while time.monotonic() < deadline:
            if not live and _get(f"http://127.0.0.1:{port}/v2/health/live") == 200:
                live = time.monotonic() - t0
            if _get(f"http://127.0.0.1:{port}/v2/health/ready") == 200:
                ready = time.monotonic() - t0
                break
            time.sleep(0.05)
        if not ready:
            raise RuntimeError("not ready within 120 s")
        return live or ready, ready
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", default="corolla:dev")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cpus", default="2")
    ap.add_argument("--docker-arg", action="append", default=[],
                    help="extra `docker run` argument (e.g. a -v for a model), repeatable")
    a = ap.parse_args()
    one_start(a.image, a.cpus, a.docker_arg)  # warm the page cache: a node that has the image
    lives, readies = [], []
    for i in range(a.runs):
        live, ready = one_start(a.image, a.cpus, a.docker_arg)
        lives.append(live)
        readies.append(ready)
        print(f"run {i + 1}: live {live:.2f} s, ready {ready:.2f} s", flush=True)
    print(f"{a.image}, --cpus={a.cpus}, {a.runs} runs: live median "
          f"{statistics.median(lives):.2f} s, ready median {statistics.median(readies):.2f} s "
          f"(min {min(readies):.2f}, max {max(readies):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
