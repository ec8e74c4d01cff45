"""wrk runs: a closed loop of C keep-alive connections on loopback for a bounded time.

One wrk thread drives every connection (wrk's event loop handles thousands of requests per
second in well under a core), so the load generator takes as little of the machine's two cores
as possible; its own CPU is measured (``wait4`` rusage) and reported beside the server's.
gRPC has no wrk: h2load (harness/h2load.py, C, HTTP/2) sends the request of median size
(wrk rotates every photo); ``BENCH_GRPC_CLIENT=grpcio`` runs harness.grpc_load (grpc.aio,
pre-serialised requests, rotated) instead, which costs the machine ~3x more client CPU per call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.procs import Server, cpu_seconds_between

LUA = Path(__file__).with_name("bench.lua")


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("wrk not found: installing it with apt-get (Debian)", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is required: apt-get install wrk")
    return path


@dataclass(kw_only=True)
class Point:
    requests: int
    ok: int
    errors: dict[str, int]
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    server_cpu_cores: float  # CPU-seconds of the server tree per second
    server_cpu_ms_per_req: float
    wrk_cpu_cores: float
    other_cpu_cores: float  # the rest of the machine (other users' load)
    rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _wrk(url: str, bodies: Path, content_type: str, connections: int, seconds: float
         ) -> tuple[dict[str, Any], float]:
    """One bounded load run; ``grpc://HOST:PORT/Service/Method`` runs h2load (or, with
    BENCH_GRPC_CLIENT=grpcio, harness.grpc_load)."""
    if url.startswith("grpc://") and os.environ.get("BENCH_GRPC_CLIENT", "h2load") == "h2load":
        return _h2load_grpc(url, bodies, connections, seconds)
    if url.startswith("grpc://"):
        addr, _, method = url.removeprefix("grpc://").partition("/")
        argv = [sys.executable, "-m", "harness.grpc_load", addr, "/" + method, str(bodies),
                str(connections), str(seconds)]
    else:
        argv = [ensure_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                "--timeout", "30s", "-s", str(LUA), url, "--", str(bodies), content_type]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None
    raw = proc.stdout.read()
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    out = raw.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON "):]), rusage.ru_utime + rusage.ru_stime
    raise RuntimeError(f"wrk failed (rc={proc.returncode}):\n{out}\n{err.decode(errors='replace')}")


def _h2load_grpc(url: str, bodies: Path, connections: int, seconds: float
                 ) -> tuple[dict[str, Any], float]:
    """A gRPC run with h2load (harness/h2load.py): the request of median size, repeated; the
    result in wrk's schema."""
    import tempfile

    from harness import h2load
    from harness.workload import read_bodies

    messages = sorted(read_bodies(bodies), key=len)
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "request.grpc"
        body.write_bytes(h2load.grpc_frame(messages[len(messages) // 2]))
        res = h2load.run("http://" + url.removeprefix("grpc://"), body,
                         ["content-type: application/grpc", "te: trailers"],
                         connections=connections, seconds=max(1, round(seconds)), h1=False,
                         log=Path(tmp) / "requests.log")
    lat = sorted(res.latencies_us)

    def pct(q: float) -> int:
        return lat[min(len(lat) - 1, int(q / 100 * len(lat)))] if lat else 0

    return {"requests": res.requests + res.failed, "duration_us": int(res.seconds * 1e6),
            "bytes": 0,
            "errors": {"connect": 0, "read": 0, "write": 0, "status": res.failed, "timeout": 0},
            "latency_us": {"mean": sum(lat) / max(1, len(lat)), "min": pct(0),
                           "max": lat[-1] if lat else 0, "p50": pct(50), "p90": pct(90),
                           "p99": pct(99), "p999": pct(99.9)}}, res.client_cpu_s


def measure(server: Server, url: str, bodies: Path, content_type: str, *, connections: int,
            seconds: float, warmup: float) -> Point:
    if warmup > 0:
        _wrk(url, bodies, content_type, connections, warmup)
    before = server.cpu_snapshot()
    t0 = time.monotonic()
    res, wrk_cpu = _wrk(url, bodies, content_type, connections, seconds)
    after = server.cpu_snapshot()
    wall = time.monotonic() - t0
    rss = server.rss_bytes()
    dur = res["duration_us"] / 1e6
    errors = res["errors"]
    ok = max(0, res["requests"] - errors["status"])
    cpu = cpu_seconds_between(before, after)
    busy = after.system_busy - before.system_busy
    lat = res["latency_us"]
    return Point(
        requests=res["requests"], ok=ok, errors={k: v for k, v in errors.items() if v},
        seconds=dur, rps=ok / dur if dur else 0.0,
        p50_ms=lat["p50"] / 1000, p90_ms=lat["p90"] / 1000, p99_ms=lat["p99"] / 1000,
        mean_ms=lat["mean"] / 1000, max_ms=lat["max"] / 1000,
        server_cpu_cores=cpu / wall, server_cpu_ms_per_req=1000 * cpu / ok if ok else 0.0,
        wrk_cpu_cores=wrk_cpu / wall,
        other_cpu_cores=max(0.0, (busy - cpu - wrk_cpu) / wall),
        rss_mb=rss / 2**20,
    )
