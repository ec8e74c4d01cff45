#!/usr/bin/env python3
"""Is Corolla's memory flat under sustained load? RSS sampled over a bounded wrk run.

    python benchmarks/memory_soak.py                 # 5 minutes at concurrency 64 (the target)
    python benchmarks/memory_soak.py --seconds 60    # a shorter look

Starts Corolla (batching on) on the flowers model, drives it with wrk (b64 JSON requests by
default, ``--format raw`` for uploads) over 127.0.0.1 and samples the server's RSS, threads
and open file descriptors every ``--interval`` seconds. The first ``--settle`` seconds are the
warm-up (allocator arenas, ONNX Runtime buffers grow to their working size); after that the
verdict is **flat** when the median RSS of the last minute exceeds that of the first minute by
no more than max(16 MiB, 5%). Writes benchmarks/results/<date>-memory-soak.{md,png,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--model", default="flowers", choices=["flowers", "cnn", "tiny"])
    ap.add_argument("--format", default="b64", choices=["b64", "raw"])
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--settle", type=float, default=30.0)
    ap.add_argument("--photos", type=Path, default=BENCH.parent.parent / "shared" / "datasets"
                    / "flower_photos")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    args = ap.parse_args()
    from harness import envs

    envs.run_in_harness(__file__)  # the harness's environment

    import psutil
    from harness.loadgen import _wrk, ensure_wrk
    from harness.models import build_models
    from harness.servers import build
    from harness.workload import FORMATS, bodies_for, feature_rows, pick_photos, write_bodies

    ensure_wrk()
    work = BENCH / ".work"
    models = build_models(work, envs.REPO)
    info = models[args.model]
    fmt = FORMATS["corolla"][args.format]
    photos = [p.read_bytes() for p in pick_photos(args.photos, 256)]
    bodies = bodies_for(fmt, info["image"], photos, feature_rows(256))
    if bodies is None:
        raise SystemExit(f"format {args.format} does not apply to model {args.model}")
    bpath = write_bodies(work / "bodies" / f"corolla-{args.format}-{args.model}.bin", bodies)
    srv, port, _ = build("corolla", model=args.model, info=info, batching=True, work=work)
    url = f"http://127.0.0.1:{port}{fmt.path.format(model=args.model)}"
    started = dt.datetime.now()
    samples: list[dict[str, float]] = []
    result: dict[str, object] = {}
    srv.start()
    try:
        srv.wait_ready(url, bodies[0], fmt.content_type)
        proc = psutil.Process(srv.pid)
        rss0 = proc.memory_info().rss

        def load() -> None:
            result["wrk"] = _wrk(url, bpath, fmt.content_type, args.concurrency, args.seconds)[0]

        t = threading.Thread(target=load)
        t0 = time.monotonic()
        t.start()
        while t.is_alive():
            mem = proc.memory_info()
            samples.append({"t": time.monotonic() - t0, "rss_mib": mem.rss / 2**20,
                            "threads": proc.num_threads(), "fds": proc.num_fds(),
                            "cpu_percent": proc.cpu_percent()})
            t.join(args.interval)
    finally:
        srv.stop()
    w = result.get("wrk")
    post = [s for s in samples if s["t"] >= args.settle]
    first = [s["rss_mib"] for s in post if s["t"] < args.settle + 60]
    last = [s["rss_mib"] for s in post if s["t"] >= post[-1]["t"] - 60] if post else []
    verdict: dict[str, object] = {"rss_before_load_mib": rss0 / 2**20}
    if first and last and post[-1]["t"] - args.settle >= 120:
        a, b = statistics.median(first), statistics.median(last)
        growth = b - a
        allowed = max(16.0, 0.05 * a)
        ts = [s["t"] for s in post]
        ys = [s["rss_mib"] for s in post]
        slope = statistics.linear_regression(ts, ys).slope * 60 if len(post) > 2 else 0.0
        verdict.update(first_minute_median_mib=a, last_minute_median_mib=b, growth_mib=growth,
                       allowed_growth_mib=allowed, slope_mib_per_min=slope,
                       peak_mib=max(ys), flat=growth <= allowed)
    else:
        verdict.update(flat=None, note="run too short for a verdict (needs settle + 2 minutes)")
    doc = {"started": started.isoformat(timespec="seconds"), "settings": vars(args) | {
        "photos": str(args.photos), "out": str(args.out)}, "model": info,
        "loadavg": os.getloadavg(), "wrk": w, "verdict": verdict, "samples": samples}
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{started:%Y-%m-%d}-memory-soak"
    base.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    rps = ""
    if isinstance(w, dict):
        ok = w["requests"] - w["errors"]["status"]
        rps = (f"{ok / (w['duration_us'] / 1e6):.1f} requests/s, {w['requests']} requests, "
               f"errors {w['errors']}, p50 {w['latency_us']['p50'] / 1000:.1f} ms, "
               f"p99 {w['latency_us']['p99'] / 1000:.1f} ms")
    flat = verdict.get("flat")
    lines = [
        f"# Memory soak: {started:%Y-%m-%d %H:%M}", "",
        f"Corolla (batching on), {args.model} model, {args.format} requests, concurrency "
        f"{args.concurrency}, {args.seconds:g} s of wrk on 127.0.0.1; RSS sampled every "
        f"{args.interval:g} s; the first {args.settle:g} s are warm-up. Load average at the end: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.", "",
        f"Load: {rps}", "",
        f"**Verdict: {'FLAT' if flat else 'NOT FLAT' if flat is False else 'no verdict'}**", "",
        "| measure | value |", "|---|---|",
        *[f"| {k} | {v:.1f} |" if isinstance(v, float) else f"| {k} | {v} |"
          for k, v in verdict.items()],
        "", f"Threads at the end: {samples[-1]['threads'] if samples else '–'}; open file "
        f"descriptors at the end: {samples[-1]['fds'] if samples else '–'} (max "
        f"{max((s['fds'] for s in samples), default=0)}).", "",
    ]
    base.with_suffix(".md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([s["t"] for s in samples], [s["rss_mib"] for s in samples], "-", color="#c0392b")
    ax.axvline(args.settle, color="k", ls=":", label="end of warm-up")
    ax.set_xlabel("seconds under load")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Corolla RSS, {args.model} {args.format}, concurrency {args.concurrency}: "
                 f"{'flat' if flat else 'not flat' if flat is False else 'no verdict'}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(base.with_suffix(".png"), dpi=90)
    print("\n".join(lines))
    print(f"wrote {base}.md, .png, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
