#!/usr/bin/env python3
"""The fault-tolerance check of deploy/compose, under load (run by scripts/cluster-check.sh).

With the stack up, a closed-loop load of REST predicts (raw JPEG) and gRPC Classify calls goes
through the load balancer on loopback while three steps happen, one after the other:

  (a) a new model version is published to the store (S3), and every replica swaps to it;
  (b) one replica is killed with SIGKILL (Docker restarts it; the step ends when it is back);
  (c) every replica is restarted (SIGTERM, drain, start), one at a time.

Each step reports requests sent and failed, per protocol, with the failures' reasons. Targets:
0 failed in (a) and (c); (b) reports its count (HAProxy retries what it can replay). Exit status
1 when (a) or (c) failed a request or a step did not complete, 0 otherwise. Every request goes
to 127.0.0.1; loops are bounded in time (each step has a deadline) and stop by themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

MODEL = "flowers"
STORE = "s3://models"  # the compose stack's store (deploy/compose/config/models.config)


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


class Load:
    """REST and gRPC workers that send until stopped, counting into the current step's tally."""

    def __init__(self, rest_url: str, grpc_target: str, key: str, photos: list[bytes],
                 rest_workers: int, grpc_workers: int) -> None:  # fmt: skip
        self.rest_url, self.grpc_target, self.key = rest_url, grpc_target, key
        self.photos = photos
        self.rest_workers, self.grpc_workers = rest_workers, grpc_workers
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def step(self) -> Tally:
        """Start counting a new step; returns the previous step's tally."""
        done, self.tally = self.tally, Tally()
        return done

    def fail(self, proto: str, reason: str) -> None:
        self.tally.failed[proto] += 1
        self.tally.reasons[f"{proto}: {reason}"[:160]] += 1

    async def rest_worker(self, i: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "image/jpeg"}
        url = f"{self.rest_url}/v1/models/{MODEL}:predict"
        async with httpx.AsyncClient(timeout=30) as client:
            n = i
            while not self.stop.is_set():
                n += 1
                tally = self.tally
                tally.sent["rest"] += 1
                try:
                    r = await client.post(url, content=self.photos[n % len(self.photos)],
                                          headers=headers)  # fmt: skip
                    if r.status_code != 200 or "predictions" not in r.json():
                        self.fail("rest", f"HTTP {r.status_code} {r.text[:100]}")
                except (httpx.HTTPError, ValueError) as exc:
                    self.fail("rest", f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.05)

    async def grpc_worker(self, i: int) -> None:
        from corolla.protos.gen.tensorflow_serving.apis import (
            classification_pb2,
            prediction_service_pb2_grpc,
        )

        requests = []
        for photo in self.photos:
            req = classification_pb2.ClassificationRequest()
            req.model_spec.name = MODEL
            req.input.example_list.examples.add().features.feature["image"].bytes_list.value.append(
                photo
            )
            requests.append(req)
        metadata = (("authorization", f"Bearer {self.key}"),)
        async with grpc.aio.insecure_channel(self.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            n = i
            while not self.stop.is_set():
                n += 1
                tally = self.tally
                tally.sent["grpc"] += 1
                try:
                    resp = await stub.Classify(requests[n % len(requests)], metadata=metadata,
                                               timeout=30)  # fmt: skip
                    if not resp.result.classifications:
                        self.fail("grpc", "empty result")
                except grpc.aio.AioRpcError as exc:
                    self.fail("grpc", f"{exc.code().name}: {exc.details()}")
                    await asyncio.sleep(0.05)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self.rest_worker(i)) for i in range(self.rest_workers)]
        self.tasks += [asyncio.create_task(self.grpc_worker(i)) for i in range(self.grpc_workers)]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


class Stack:
    """The compose project: its containers, their own ports, the load balancer's view."""

    def __init__(self, compose: list[str]) -> None:
        self.compose = compose

    def run(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([*self.compose, *args], capture_output=True, text=True,
                             timeout=180, check=False)  # fmt: skip
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
        return out.stdout.strip()

    def container(self, service: str) -> str:
        cid = self.run("ps", "-q", service)
        if not cid:
            raise RuntimeError(f"no container for {service}")
        return cid.splitlines()[0]

    def port(self, service: str, port: int) -> int:
        out = subprocess.run(["docker", "port", self.container(service), f"{port}/tcp"],
                             capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
        return int(out.stdout.splitlines()[0].rsplit(":", 1)[1])

    async def versions(self, service: str) -> dict[int, str]:
        """{version: state} as the replica itself reports it; {} while it does not answer."""
        try:
            port = await asyncio.to_thread(self.port, service, 8501)
            async with httpx.AsyncClient(timeout=3) as c:
                r = await c.get(f"http://127.0.0.1:{port}/v1/models/{MODEL}",
                                headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
            return {int(v["version"]): v["state"] for v in r.json()["model_version_status"]}
        except (httpx.HTTPError, RuntimeError, KeyError, ValueError, IndexError,
                subprocess.CalledProcessError):  # fmt: skip
            return {}

    async def lb_up(self, service: str) -> bool:
        """Whether HAProxy has the replica UP in both backends (its stats page, CSV)."""
        try:
            port = await asyncio.to_thread(self.port, "lb", 8404)
            async with httpx.AsyncClient(timeout=3) as c:
                csv = (await c.get(f"http://127.0.0.1:{port}/stats;csv")).text
        except (httpx.HTTPError, RuntimeError, subprocess.CalledProcessError, IndexError):
            return False
        rows = [line.split(",") for line in csv.splitlines() if not line.startswith("#")]
        states = [r[17] for r in rows if len(r) > 17 and r[1] == service]
        return len(states) == 2 and all(s.startswith("UP") for s in states)

    async def ready_everywhere(self, service: str, version: int | None = None) -> bool:
        available = {v for v, state in (await self.versions(service)).items()
                     if state == "AVAILABLE"}  # fmt: skip
        if not available or (version is not None and available != {version}):
            return False
        return await self.lb_up(service)


def server_pid(container: str) -> int:
    """Host PID of the Corolla process: the one child of the container's init (tini)."""
    init = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", container],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"container {container}: init {init} has children {children}")
    return int(children[0])


KEY = ""
REPLICAS = ("corolla1", "corolla2", "corolla3")


async def wait_for(what: str, check: Any, deadline: float) -> float:
    start = time.monotonic()
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.25)
    return time.monotonic() - start


def load_photos(folder: str | None, count: int) -> tuple[list[bytes], str]:
    if folder and Path(folder).is_dir():
        files = sorted(p for p in Path(folder).rglob("*.jpg") if p.stat().st_size < 200_000)
        if files:
            step = max(1, len(files) // count)
            return [p.read_bytes() for p in files[::step][:count]], f"{folder} ({count} photos)"
    from PIL import Image

    photos = []
    for i in range(count):
        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (40 * i % 255, 120, 200 - 7 * i % 200)).save(buf, "JPEG")
        photos.append(buf.getvalue())
    return photos, f"{count} generated JPEGs (no photo folder found)"


async def main(a: argparse.Namespace) -> int:
    global KEY
    KEY = a.api_key
    stack = Stack(shlex.split(a.compose))
    photos, source = load_photos(a.photos, 24)
    load = Load(a.rest_url, a.grpc_target, a.api_key, photos, a.rest_workers, a.grpc_workers)
    results: list[dict[str, Any]] = []
    problems: list[str] = []

    def record(name: str, tally: Tally, seconds: float, note: str, **extra: Any) -> None:
        results.append({"step": name, "seconds": round(seconds, 1), "note": note,
                        "sent": dict(tally.sent), "failed": dict(tally.failed),
                        "reasons": dict(tally.reasons.most_common(8)), **extra})  # fmt: skip
        sent, failed = sum(tally.sent.values()), sum(tally.failed.values())
        print(f"   {name}: {sent} sent ({tally.sent['rest']} REST, {tally.sent['grpc']} gRPC), "
              f"{failed} failed ({tally.failed['rest']} REST, {tally.failed['grpc']} gRPC) "
              f"in {seconds:.1f} s; {note}", flush=True)  # fmt: skip
        for reason, n in tally.reasons.most_common(8):
            print(f"      {n} x {reason}", flush=True)

    for s in REPLICAS:
        await wait_for(f"{s} ready", lambda s=s: stack.ready_everywhere(s), time.monotonic() + 120)
    current = max(await stack.versions(REPLICAS[0]))
    print(f">> load: {a.rest_workers} REST + {a.grpc_workers} gRPC clients in a closed loop, "
          f"photos: {source}", flush=True)  # fmt: skip
    load.start()
    t0 = time.monotonic()
    await asyncio.sleep(a.steady_seconds)
    record("steady", load.step(), time.monotonic() - t0, "no change (baseline)")

    # (a) a new version, published to the store with `corolla push` (files first, the
    # manifest last): every replica lists it, downloads, verifies and swaps to it.
    new = current + 1
    t0 = time.monotonic()
    await asyncio.to_thread(
        stack.run, "run", "--rm", "--no-deps", "-T", "--entrypoint", "/bin/sh", "seed", "-c",
        "corolla push \"$(python -c 'from corolla.serve_options import default_model_base_path "
        f"as p; print(p())')/1\" {STORE}/{MODEL} --version {new}",
    )  # fmt: skip
    published = time.monotonic() - t0
    try:
        for s in REPLICAS:
            await wait_for(f"{s} serving only v{new}",
                           lambda s=s: stack.ready_everywhere(s, new), t0 + 120)  # fmt: skip
        swapped = time.monotonic() - t0
        await asyncio.sleep(2)
        record("(a) new version", load.step(), time.monotonic() - t0,
               f"v{new} published in {published:.1f} s; all 3 replicas served only v{new} "
               f"{swapped:.1f} s after the publish began", target=0)  # fmt: skip
    except TimeoutError as exc:
        problems.append(f"(a): {exc}")
        record("(a) new version", load.step(), time.monotonic() - t0, f"TIMEOUT: {exc}", target=0)

    # (b) SIGKILL the server process of one replica, as the kernel's OOM killer would (`docker
    # kill` would count as a manual stop, which Docker's restart policy leaves stopped); tini
    # exits with it, and the restart policy brings the container back.
    victim = "corolla2"
    t0 = time.monotonic()
    os.kill(server_pid(stack.container(victim)), signal.SIGKILL)
    try:
        await asyncio.sleep(1)
        back = await wait_for(f"{victim} back", lambda: stack.ready_everywhere(victim, new),
                              t0 + 180)  # fmt: skip
        await asyncio.sleep(2)
        record("(b) SIGKILL one replica", load.step(), time.monotonic() - t0,
               f"{victim} killed; restarted by Docker and back in the LB "
               f"{back + 1:.1f} s later")  # fmt: skip
    except TimeoutError as exc:
        problems.append(f"(b): {exc}")
        record("(b) SIGKILL one replica", load.step(), time.monotonic() - t0, f"TIMEOUT: {exc}")

    # (c) rolling restart: each replica gets SIGTERM, drains, stops, starts, turns ready.
    t0 = time.monotonic()
    took = []
    try:
        for s in REPLICAS:
            t1 = time.monotonic()
            await asyncio.to_thread(stack.run, "restart", "-t", "30", s)
            await wait_for(f"{s} back after restart",
                           lambda s=s: stack.ready_everywhere(s, new), t1 + 180)  # fmt: skip
            took.append(time.monotonic() - t1)
        await asyncio.sleep(2)
        record("(c) rolling restart", load.step(), time.monotonic() - t0,
               "each replica restarted and back in the LB in "
               + ", ".join(f"{t:.1f}" for t in took) + " s", target=0)  # fmt: skip
    except TimeoutError as exc:
        problems.append(f"(c): {exc}")
        record("(c) rolling restart", load.step(), time.monotonic() - t0, f"TIMEOUT: {exc}",
               target=0)  # fmt: skip
    await load.close()

    for r in results:
        if r.get("target") == 0 and sum(r["failed"].values()):
            problems.append(f"{r['step']}: {sum(r['failed'].values())} failed (target 0)")
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "photos": source,
                                            "problems": problems}, indent=2))  # fmt: skip
    for p in problems:
        print(f"FAIL {p}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compose", required=True, help="the compose command with -p and -f")
    ap.add_argument("--rest-url", required=True)
    ap.add_argument("--grpc-target", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--photos", default=os.environ.get("COROLLA_PHOTOS"))
    ap.add_argument("--rest-workers", type=int, default=4)
    ap.add_argument("--grpc-workers", type=int, default=2)
    ap.add_argument("--steady-seconds", type=float, default=5)
    ap.add_argument("--json", default=None, help="write the results here")
    sys.exit(asyncio.run(main(ap.parse_args())))
