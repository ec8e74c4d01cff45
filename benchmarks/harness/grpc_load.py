"""A small closed-loop gRPC load generator (wrk has no gRPC, and k6's JavaScript spends ~100 ms
of client CPU per call building a 75 KB photo request on this machine).

    python -m harness.grpc_load ADDR METHOD BODIES CONCURRENCY SECONDS

C coroutines, each with its own channel (one HTTP/2 connection, like wrk's keep-alive
connections), send pre-serialised request messages (BODIES: ``<length>\\n<bytes>`` records)
as raw bytes (no client-side protobuf work) in rotation for SECONDS and print one line
``WRK_JSON {...}`` in wrk's schema (latency in microseconds).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

import grpc

from harness.workload import read_bodies


async def _user(addr: str, method: str, bodies: list[bytes], deadline: float,
                lat: list[float], errors: dict[str, int]) -> None:
    async with grpc.aio.insecure_channel(addr, options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            # Its own connection: by default gRPC shares one between channels to one address.
            ("grpc.use_local_subchannel_pool", 1)]) as ch:
        call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        i = random.randrange(len(bodies))
        while time.perf_counter() < deadline:
            i = (i + 1) % len(bodies)
            t0 = time.perf_counter()
            try:
                await call(bodies[i], timeout=30)
            except grpc.aio.AioRpcError as exc:
                key = "timeout" if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "status"
                errors[key] += 1
            lat.append(time.perf_counter() - t0)


async def run(addr: str, method: str, bodies: list[bytes], concurrency: int, seconds: float
              ) -> dict[str, object]:
    lat: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    t0 = time.perf_counter()
    await asyncio.gather(*(_user(addr, method, bodies, t0 + seconds, lat, errors)
                           for _ in range(concurrency)))
    dur = time.perf_counter() - t0
    lat.sort()

    def pct(q: float) -> int:
        return int(1e6 * lat[min(len(lat) - 1, int(q / 100 * len(lat)))]) if lat else 0

    return {"requests": len(lat), "duration_us": int(dur * 1e6), "bytes": 0, "errors": errors,
            "latency_us": {"mean": 1e6 * sum(lat) / max(1, len(lat)),
                           "min": pct(0), "max": int(1e6 * lat[-1]) if lat else 0,
                           "p50": pct(50), "p90": pct(90), "p99": pct(99), "p999": pct(99.9)}}


def main() -> None:
    addr, method, path, conc, secs = sys.argv[1:6]
    bodies = read_bodies(Path(path))
    try:
        import uvloop

        res = uvloop.run(run(addr, method, bodies, int(conc), float(secs)))
    except ImportError:
        res = asyncio.run(run(addr, method, bodies, int(conc), float(secs)))
    print("WRK_JSON " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
