#!/usr/bin/env python3
"""Can client traffic get Corolla OOM-killed? Big requests against a server in a memory-limited
cgroup, with and without the request memory budget (--memory_budget_mib, corolla.admission).

    .venv/bin/python benchmarks/memory_admission.py                      # the default cases
    .venv/bin/python benchmarks/memory_admission.py --limit-mib 2048 --budget 0 --budget 1024

Each case starts ``corolla serve`` (the default flowers model) in a fresh cgroup whose memory
limit is ``--limit-mib`` (cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``: this needs
root and a writable cgroup tree; without one the server runs unconfined and only its RSS is
reported). Workloads, each ``--rounds`` times:

- ``json``: ``--clients`` concurrent TF Serving JSON :predict bodies of 16 flower photos each as
  224x224x3 numbers (~20 MB each, under the 32 MiB body limit);
- ``jpeg``: ``--clients`` concurrent uploads of one 79-megapixel progressive JPEG (a flower photo
  scaled up, 4:4:4 chroma: the worst for libjpeg's memory).

Reports every answer's status, the cgroup's peak memory and OOM kills, and the server's peak
RSS (sampled every 20 ms). Writes benchmarks/results/<date>-memory-admission.{md,json}.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PHOTOS = REPO.parent.parent / "shared" / "datasets" / "flower_photos"


# ---- cgroups ----------------------------------------------------------------------------


class Cgroup:
    """A child cgroup with a memory limit (v2 or v1), removed on close."""

    def __init__(self, limit: int, name: str) -> None:
        self.path: Path | None = None
        self.version = 0
        own = _own_cgroups()
        v2 = Path("/sys/fs/cgroup") / own.get("", "/").lstrip("/")
        v1 = Path("/sys/fs/cgroup/memory") / own.get("memory", "/").lstrip("/")
        for version, base, knob in ((2, v2, "memory.max"), (1, v1, "memory.limit_in_bytes")):
            if not (base / knob).exists() and not (base / "cgroup.controllers").exists():
                continue
            path = base / name
            try:
                path.mkdir(exist_ok=True)
                (path / knob).write_text(str(limit))
                if version == 2:
                    with contextlib.suppress(OSError):
                        (path / "memory.swap.max").write_text("0")
                else:
                    with contextlib.suppress(OSError):
                        (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            self.path, self.version = path, version
            return

    def enter(self) -> None:
        """preexec_fn: move the child process into the cgroup."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> int | None:
        if self.path is None:
            return None
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((self.path / name).read_text())
        return None

    def oom_kills(self) -> int | None:
        if self.path is None:
            return None
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


def _own_cgroups() -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            if hierarchy == "0":
                out[""] = path
            for c in controllers.split(","):
                out[c] = path
    return out


# ---- workloads --------------------------------------------------------------------------


def json_body(photos: list[Path]) -> bytes:
    import numpy as np
    from PIL import Image

    rows = []
    for p in photos:
        im = Image.open(p).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        rows.append((np.asarray(im, np.float64) / 255.0).round(4))
    return json.dumps({"instances": np.stack(rows).tolist()}).encode()


def big_jpeg(photo: Path, megapixels: float) -> bytes:
    from PIL import Image

    im = Image.open(photo).convert("RGB")
    scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
    im = im.resize((int(im.width * scale), int(im.height * scale)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, progressive=True, subsampling=0)
    return buf.getvalue()


# ---- one case ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(flags: list[str], cgroup: Cgroup, log: Path
           ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    import httpx

    rest, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "corolla", "serve", "--host=127.0.0.1",
           f"--rest_api_port={rest}", f"--port={grpc_port}", *flags]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=cgroup.enter, cwd=REPO)
    url = f"http://127.0.0.1:{rest}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except Exception:  # the process is gone (killed)
                return
            self.stop.wait(0.02)


def run_case(name: str, body: bytes, content_type: str, path: str, args: argparse.Namespace,
             budget: int | None, log_dir: Path) -> dict[str, Any]:
    import httpx

    limit = args.limit_mib << 20
    cgroup = Cgroup(limit, f"corolla-memadm-{os.getpid()}-{name}-{budget}")
    flags = [] if budget is None else [f"--memory_budget_mib={budget}"]
    statuses: Counter[str] = Counter()
    retry_after: Counter[str] = Counter()
    try:
        with server(flags, cgroup, log_dir / f"{name}-{budget}.log") as (url, proc):
            sampler = RssSampler(proc.pid)
            idle_rss = sampler.proc.memory_info().rss
            sampler.start()

            def one(_: int) -> None:
                try:
                    r = httpx.post(url + path, content=body, timeout=120,
                                   headers={"content-type": content_type})
                    statuses[str(r.status_code)] += 1
                    if "retry-after" in r.headers:
                        retry_after[r.headers["retry-after"]] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                for _ in range(args.rounds):
                    list(pool.map(one, range(args.clients)))
            seconds = time.monotonic() - t0
            sampler.stop.set()
            sampler.join()
            alive = proc.poll() is None
        return {"case": name, "budget_mib": budget, "limit_mib": args.limit_mib,
                "cgroup": f"v{cgroup.version}" if cgroup.path else "none",
                "requests": args.rounds * args.clients, "statuses": dict(statuses),
                "retry_after": dict(retry_after), "idle_rss_mib": idle_rss >> 20,
                "peak_rss_mib": sampler.peak >> 20,
                "cgroup_peak_mib": (p >> 20) if (p := cgroup.peak()) else None,
                "oom_kills": cgroup.oom_kills(), "server_alive": alive,
                "seconds": round(seconds, 1)}
    finally:
        cgroup.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit-mib", type=int, default=2048, help="the cgroup's memory limit")
    ap.add_argument("--budget", type=int, action="append",
                    help="--memory_budget_mib values to try (repeat; 0: off; -1: the default "
                         "derived from the cgroup limit); default: 0 and 1024")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="json,jpeg")
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--name", default="memory-admission")
    args = ap.parse_args()
    budgets = args.budget or [0, 1024]
    photos = sorted(args.photos.glob("*/*.jpg"))[:16]
    if len(photos) < 16:
        raise SystemExit(f"need 16 photos under {args.photos}")
    work = BENCH / ".work" / "memory-admission"
    work.mkdir(parents=True, exist_ok=True)
    bodies = {}
    if "json" in args.cases:
        bodies["json"] = (json_body(photos), "application/json", "/v1/models/flowers:predict")
    if "jpeg" in args.cases:
        bodies["jpeg"] = (big_jpeg(photos[0], 79), "image/jpeg", "/v1/models/flowers:predict")
    results = []
    for case, (body, ctype, path) in bodies.items():
        for budget in budgets:
            res = run_case(case, body, ctype, path, args, None if budget < 0 else budget, work)
            res["body_mib"] = round(len(body) / (1 << 20), 1)
            print(json.dumps(res), flush=True)
            results.append(res)
    stamp = dt.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stamp}-{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# Memory admission ({stamp})", "",
             f"`{' '.join(['benchmarks/memory_admission.py', *sys.argv[1:]])}`: "
             f"{args.clients} concurrent clients x {args.rounds} rounds, cgroup limit "
             f"{args.limit_mib} MiB.", "",
             "| case | body MiB | --memory_budget_mib | answers | idle RSS | peak RSS | "
             "cgroup peak | OOM kills | server alive |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        budget = "default" if r["budget_mib"] is None else r["budget_mib"]
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        lines.append(f"| {r['case']} | {r['body_mib']} | {budget} | {answers} | "
                     f"{r['idle_rss_mib']} MiB | {r['peak_rss_mib']} MiB | "
                     f"{r['cgroup_peak_mib']} MiB | {r['oom_kills']} | {r['server_alive']} |")
    (args.out / f"{stamp}-{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
