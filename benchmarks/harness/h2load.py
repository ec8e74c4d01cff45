"""h2load (Debian's nghttp2-client) as a cheap load generator for both protocols.

wrk has no HTTP/2 and a Python gRPC client costs the server's machine ~0.1-0.3 CPU ms per
call, which on 2 cores is taken from the server it measures. h2load is written in C: it sends
a prebuilt body to one URL over C connections, one request at a time on each (``-m 1``: a
closed loop, as wrk's connections), HTTP/1.1 (``--h1``) or HTTP/2. A gRPC call is an HTTP/2
POST with ``content-type: application/grpc`` and the message framed (one flag byte, a 4-byte
big-endian length, the serialized protobuf): :func:`grpc_frame` builds it once. h2load counts
HTTP status 200 as success and does not read gRPC's status trailer, so a caller checks one
real call with a gRPC client first (benchmarks/grpc_vs_rest.py does).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path


def ensure_h2load() -> str:
    path = shutil.which("h2load")
    if path:
        return path
    print("h2load not found: installing nghttp2-client with apt-get (Debian)", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], check=False)
    path = shutil.which("h2load")
    if not path:
        raise SystemExit("h2load is required: apt-get install nghttp2-client")
    return path


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass(frozen=True, kw_only=True)
class H2Result:
    requests: int  # answered with HTTP 200
    failed: int
    seconds: float
    client_cpu_s: float  # the h2load process's user + system CPU
    mean_ms: float
    latencies_us: list[int]  # of each answered request, with log=True (else empty)


def run(url: str, body: Path, headers: list[str], *, connections: int, seconds: int,
        h1: bool, log: Path | None = None) -> H2Result:
    """One bounded run; ``log``: where h2load writes each request's latency (read back into
    ``latencies_us``)."""
    argv = [ensure_h2load(), "-c", str(connections), "-m", "1", "-D", str(max(1, seconds)),
            "-d", str(body)]
    if log is not None:
        argv.append(f"--log-file={log}")
    for h in headers:
        argv += ["-H", h]
    if h1:
        argv.append("--h1")
    argv.append(url)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    _, _, rusage = os.wait4(proc.pid, 0)  # reaped here, so its CPU time is its own
    proc.returncode = 0
    text = out.decode(errors="replace")
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed",
                  text)
    codes = re.search(r"status codes: (\d+) 2xx", text)
    fin = re.search(r"finished in ([\d.]+)s", text)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
    if not (m and codes and fin):
        raise RuntimeError(f"h2load failed:\n{text}\n{err.decode(errors='replace')}")
    cpu = rusage.ru_utime + rusage.ru_stime
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    latencies: list[int] = []
    if log is not None:
        for line in log.read_text().splitlines():  # start, status, elapsed (microseconds)
            parts = line.split("\t")
            if len(parts) == 3 and parts[1] == "200":
                latencies.append(int(parts[2]))
    return H2Result(requests=int(codes.group(1)), failed=int(m.group(2)),
                    seconds=float(fin.group(1)), client_cpu_s=cpu,
                    mean_ms=float(mean.group(1)) * scale[mean.group(2)] if mean else 0.0,
                    latencies_us=latencies)
