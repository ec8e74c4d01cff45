#!/usr/bin/env python3
"""Does a SIGTERM under load lose requests? Many runs of clients hammering a server that is
told to stop.

    .venv/bin/python benchmarks/drain.py --runs 50 --clients 16

Each run starts ``corolla serve`` on loopback (a fake-runtime model that takes 2 ms per call,
so that requests are in flight), starts ``--clients`` threads that send ``:predict`` requests
back to back (half on keep-alive connections, half on a new connection per request), sends
SIGTERM after a random 0.3-1.0 s, and lets the clients go on until the server no longer
accepts connections. Every request ends as one of:

- answered (any HTTP status: 200, or a 503 while draining);
- refused: the connection was never established (ECONNREFUSED, or the connect timed out): the
  request was never sent, a client can retry it elsewhere;
- **lost**: the request went out on an established connection and no answer came back (reset,
  or closed without a response).

Writes benchmarks/results/<date>-drain[-NAME].md with the totals over all runs and the server's
exit codes. ``PYTHONPATH`` on another checkout measures that one (its docstring in
benchmarks/attack_replay.py shows how).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_run(model_root: Path, clients: int, seed: int, extra: list[str]) -> tuple[Counter[str],
                                                                                  int | None]:
    import httpx

    rng = random.Random(seed)
    port, gport = free_port(), free_port()
    env = {**os.environ, "COROLLA_ENABLE_FAKE_RUNTIME": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corolla", "serve", "--host=127.0.0.1",
         f"--rest_api_port={port}", f"--port={gport}", "--model_name=m",
         f"--model_base_path={model_root}", "--enable_batching=false", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("server did not start")
        time.sleep(0.05)
    body = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]]}).encode()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client(keep_alive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(base_url=url, timeout=httpx.Timeout(10, connect=2),
                          limits=limits) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/models/m:predict", content=body,
                               headers={"content-type": "application/json"})
                    what = "answered" if r.status_code == 200 else f"answered {r.status_code}"
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    what = "refused"
                except httpx.HTTPError as exc:
                    what = f"lost ({type(exc).__name__})"
                with lock:
                    outcomes[what] += 1
                if what == "refused":
                    return  # the server no longer listens

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.3, 1.0))
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = None
    stop.set()  # clients still waiting for a refusal stop now
    for t in threads:
        t.join(30)
    return outcomes, code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--name", default="")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--serve-args", default="", help="extra corolla serve flags")
    args = ap.parse_args()
    from corolla.runtimes.fake import write_fake_version

    totals: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    runs_losing = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "m"
        write_fake_version(root, 1, labels=["a", "b", "c", "d"], predict_seconds=0.002)
        for i in range(args.runs):
            outcomes, code = one_run(root, args.clients, i, args.serve_args.split())
            totals.update(outcomes)
            codes[str(code)] += 1
            lost = sum(v for k, v in outcomes.items() if k.startswith("lost"))
            runs_losing += lost > 0
            print(f"run {i + 1}: {dict(outcomes)} exit {code}", flush=True)
    lost_total = sum(v for k, v in totals.items() if k.startswith("lost"))
    import corolla

    lines = [f"# SIGTERM under load ({dt.date.today().isoformat()})", "",
             f"`{' '.join(['benchmarks/drain.py', *sys.argv[1:]])}`: {args.runs} runs of "
             f"{args.clients} clients, corolla from `{Path(corolla.__file__).parent}`.", "",
             "| outcome | requests |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(totals.items())]
    lines += ["", f"Requests lost: **{lost_total}**, in {runs_losing} of {args.runs} runs. "
              f"Server exit codes: {dict(codes)}."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.name}" if args.name else ""
    (args.out / f"{dt.date.today().isoformat()}-drain{suffix}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
