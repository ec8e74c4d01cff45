#!/usr/bin/env python3
"""Where Corolla's CPU goes per request: py-spy on the server under wrk load.

    python benchmarks/profile_corolla.py [--seconds 15] [--concurrency 32]

For each scenario (flowers b64 JSON, flowers raw upload, tiny-model JSON) it starts Corolla
(batching on, defaults otherwise), drives it with wrk at the given concurrency, and over the
same window measures the CPU of every server thread exactly (psutil, per thread id) while
``py-spy record --threads`` samples the stacks (100 Hz). Threads are grouped (event loop, decode
pool, inference pool, other); a group's CPU ms per request is exact. Within a group, samples
whose leaf is a known wait (a pool worker waiting for work, the event loop inside uvloop's C
code) are left out (py-spy's idle detection misses them), and each remaining sample is put in
the bucket of the deepest frame that matches a rule below (so time inside Pillow called from
``resize_to_spec`` counts as "resize"); buckets share the group's CPU by sample count.
Writes benchmarks/PROFILE.md (generated) and the collapsed stacks to benchmarks/results/raw/
(flamegraph.pl or speedscope read them).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

# (bucket, pattern); the deepest matching frame wins. A pattern with a "/" matches the frame as
# py-spy prints it ("func (dir/file.py:line)"), one without matches "func (file.py" (py-spy
# shortens some paths to the file name).
RULES: list[tuple[str, str]] = [
    ("ONNX Runtime inference", "predict (onnx.py"),
    ("JPEG decode (simplejpeg)", "_decode_jpeg_fast (images.py"),
    ("EXIF orientation read", "_orientation (images.py"),
    ("image header parse (Pillow open, sniff)", "_open (images.py"),
    ("image header parse (Pillow open, sniff)", "sniff_format (images.py"),
    ("resize (Pillow)", "resize_to_spec (images.py"),
    ("normalise (numpy)", "normalize (images.py"),
    ("base64 decode", "_b64decode (tfserving_rest.py"),
    ("JSON parse (orjson)", "loads (tfserving_rest.py"),
    ("JSON → tensors (codec)", "parse_predict (tfserving_rest.py"),
    ("response encoding (top-k, JSON)", "dumps (tfserving_rest.py"),
    ("response encoding (top-k, JSON)", "predict_response (tfserving_rest.py"),
    ("response encoding (top-k, JSON)", "labelled_predictions (tfserving_rest.py"),
    ("response encoding (top-k, JSON)", "top_classes (service.py"),
    ("batcher (merge, split, dispatch)", "(batching.py"),
    ("prediction service (lease, validate, gather)", "(service.py"),
    ("prediction service (lease, validate, gather)", "(runner.py"),
    ("prediction service (lease, validate, gather)", "(serving_map.py"),
    ("socket write (one per response: coalesce.py)", "(coalesce.py"),
    ("Corolla middleware and metrics (observe, limits, metrics)", "(observe.py"),
    ("Corolla middleware and metrics (observe, limits, metrics)", "(limits.py"),
    ("Corolla middleware and metrics (observe, limits, metrics)", "(metrics.py"),
    ("Corolla middleware and metrics (observe, limits, metrics)", "prometheus_client/"),
    ("REST handler (corolla/http)", "(tfserving.py"),
    ("REST handler (corolla/http)", "(kserve_v2.py"),
    ("Starlette (routing, Request, Response)", "starlette/"),
    ("uvicorn HTTP protocol (httptools)", "uvicorn/"),
    ("asyncio / uvloop (futures, tasks, callbacks)", "asyncio/"),
    ("asyncio / uvloop (futures, tasks, callbacks)", "uvloop/"),
    ("thread-pool hand-off (concurrent.futures)", "concurrent/futures/"),
]
SCENARIOS = "flowers:b64,flowers:raw,tiny:b64"  # model:format, also cnn


def _short(frame: str) -> str:
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit('/', 1)[-1]}"


def bucket_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        short = _short(frame)
        for name, pat in RULES:
            if pat in (frame if "/" in pat else short):
                return name
    return "other"


IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "Runner.run (asyncio/runners.py",
               "Condition.wait (threading.py", "Event.wait (threading.py")
GROUPS = (("event loop (MainThread)", "MainThread"), ("decode pool", "decode_"),
          ("inference pool", "infer_"))


def group_of(thread_name: str) -> str:
    for group, prefix in GROUPS:
        if thread_name.startswith(prefix):
            return group
    return "other threads"


@dataclass
class Group:
    cpu_s: float = 0.0
    samples: int = 0
    idle: int = 0
    buckets: Counter[str] = field(default_factory=Counter)
    leaves: Counter[str] = field(default_factory=Counter)


def parse_collapsed(path: Path) -> tuple[dict[str, Group], dict[int, str]]:
    """Collapsed ``--threads`` stacks -> per-group buckets; tid -> group."""
    groups: dict[str, Group] = {}
    tids: dict[int, str] = {}
    for line in path.read_text().splitlines():
        stack_s, _, n_s = line.rpartition(" ")
        if not stack_s:
            continue
        n = int(n_s)
        head, *stack = stack_s.split(";")
        # head: "thread (TID): NAME"
        tid_s, _, name = head.removeprefix("thread (").partition("): ")
        group = group_of(name)
        with contextlib.suppress(ValueError):
            tids[int(tid_s)] = group
        g = groups.setdefault(group, Group())
        g.samples += n
        if not stack or any(stack[-1].startswith(p) for p in IDLE_LEAVES):
            g.idle += n
            continue
        g.buckets[bucket_of(stack)] += n
        leaf = stack[-1]
        g.leaves[leaf.split(" (")[0] + " (" + leaf.split(" (")[-1].split("/")[-1]] += n
    return groups, tids


def thread_cpu(pid: int) -> dict[int, float]:
    import psutil

    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--scenarios", default=SCENARIOS,
                    help=f"model:format pairs, models flowers, cnn, tiny (default {SCENARIOS})")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--photos", type=Path, default=BENCH.parent.parent / "shared" / "datasets"
                    / "flower_photos")
    ap.add_argument("--out", type=Path, default=BENCH / "PROFILE.md")
    args = ap.parse_args()
    from harness import envs

    envs.run_in_harness(__file__)  # the harness's environment

    from harness.loadgen import _wrk, ensure_wrk
    from harness.models import build_models
    from harness.procs import cpu_seconds_between
    from harness.servers import build
    from harness.workload import FORMATS, bodies_for, feature_rows, pick_photos, write_bodies

    ensure_wrk()
    work = BENCH / ".work"
    raw_dir = BENCH / "results" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    models = build_models(work, envs.REPO)
    photos = [p.read_bytes() for p in pick_photos(args.photos, 256)]
    rows = feature_rows(256)
    spy = envs.python("corolla").parent / "py-spy"
    started = dt.datetime.now()
    sections: list[str] = []
    scenarios = [tuple(x.split(":", 1)) for x in args.scenarios.split(",")]
    for model, fmt_name in scenarios:
        fmt = FORMATS["corolla"][fmt_name]
        bodies = bodies_for(fmt, models[model]["image"], photos, rows)
        assert bodies is not None
        bpath = write_bodies(work / "bodies" / f"corolla-{fmt_name}-{model}.bin", bodies)
        srv, port, _ = build("corolla", model=model, info=models[model], batching=True, work=work)
        url = f"http://127.0.0.1:{port}{fmt.path.format(model=model)}"
        srv.start()
        try:
            srv.wait_ready(url, bodies[0], fmt.content_type)
            _wrk(url, bpath, fmt.content_type, args.concurrency, 3)  # warm-up
            result: dict[str, object] = {}

            def load(result: dict[str, object] = result, url: str = url,
                     bpath: Path = bpath, ctype: str = fmt.content_type) -> None:
                result["wrk"] = _wrk(url, bpath, ctype, args.concurrency, args.seconds + 2)[0]

            t = threading.Thread(target=load)
            t.start()
            time.sleep(1)
            out = raw_dir / f"profile-corolla-{model}-{fmt_name}.txt"
            before, t_before = srv.cpu_snapshot(), thread_cpu(srv.pid)
            t0 = time.monotonic()
            subprocess.run([str(spy), "record", "-p", str(srv.pid), "--threads",
                            "-d", str(max(1, round(args.seconds))), "-r", str(args.rate),
                            "-f", "raw", "-o", str(out)], check=True, capture_output=True)
            t_after = thread_cpu(srv.pid)
            cpu = cpu_seconds_between(before, srv.cpu_snapshot())
            wall = time.monotonic() - t0
            t.join()
            w = result["wrk"]
            assert isinstance(w, dict)
            rps = (w["requests"] - w["errors"]["status"]) / (w["duration_us"] / 1e6)
            ms_per_req = 1000 * cpu / (rps * wall)
        finally:
            srv.stop()
        groups, tids = parse_collapsed(out)
        for tid, t in t_after.items():
            g = groups.setdefault(tids.get(tid, "other threads"), Group())
            g.cpu_s += t - t_before.get(tid, 0.0)
        n_req = rps * wall
        lines = [f"### {model} model, {fmt_name} requests, concurrency {args.concurrency}", "",
                 f"{rps:.0f} requests/s, server CPU {cpu / wall:.2f} cores = "
                 f"**{ms_per_req:.2f} CPU ms per request** (py-spy's sampling adds a little).",
                 "", "| thread group | CPU ms/request | share of server CPU |", "|---|---|---|"]
        order = sorted(groups.items(), key=lambda kv: -kv[1].cpu_s)
        for name, g in order:
            lines.append(f"| {name} | {1000 * g.cpu_s / n_req:.3f} | "
                         f"{100 * g.cpu_s / cpu:.1f}% |")
        for name, g in order:
            active = sum(g.buckets.values())
            if not active or g.cpu_s / cpu < 0.02:
                continue
            g_ms = 1000 * g.cpu_s / n_req
            lines += ["", f"**{name}**: {g_ms:.3f} CPU ms/request; {active} active samples "
                      f"({g.idle} waiting samples left out)", "",
                      "| where | share of the group | CPU ms/request |", "|---|---|---|"]
            for b, n in g.buckets.most_common():
                lines.append(f"| {b} | {100 * n / active:.1f}% | {g_ms * n / active:.3f} |")
            lines += ["", "Hottest leaf frames: " + "; ".join(
                f"`{leaf}` {100 * n / active:.0f}%" for leaf, n in g.leaves.most_common(6))]
        lines.append("")
        sections.append("\n".join(lines))
        print(sections[-1], flush=True)
    head = [
        "## Measurements", "",
        f"Generated by `python benchmarks/profile_corolla.py` on {started:%Y-%m-%d %H:%M} "
        f"({os.cpu_count()} cores, load average at start "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}). Corolla with its defaults "
        "(batching on), wrk on 127.0.0.1, py-spy sampling on-CPU Python threads; each sample "
        "is charged to the deepest frame that matches one of the buckets (see RULES in the "
        "script), so C work (libjpeg-turbo, Pillow, ONNX Runtime, orjson) counts under the "
        "Corolla function that called it. Raw stacks: benchmarks/results/raw/.", "",
        f"Flowers model: {models['flowers']['source']}.", "",
    ]
    # A hand-written summary above the marker survives regeneration.
    marker = "<!-- generated by profile_corolla.py below; edit above this line -->"
    keep = ""
    if args.out.exists() and marker in args.out.read_text():
        keep = args.out.read_text().split(marker)[0]
    args.out.write_text(keep + marker + "\n\n" + "\n".join(head + sections))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
