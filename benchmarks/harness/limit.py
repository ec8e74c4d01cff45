"""The in-process limit: Corolla's own decode + preprocess + ONNX Runtime inference, no server.

``python -m harness.limit --model-dir DIR --photos BODIES --seconds S`` prints one JSON object:

- ``cpu_ms_per_photo_decode``: CPU of ``corolla.images.preprocess_image`` (decode, resize,
  normalise) per photo, one thread;
- ``cpu_ms_per_photo_infer[B]``: CPU of inference per photo at batch size B (one ONNX Runtime
  thread, as Corolla runs it with batching on);
- ``single_call_ms``: wall time of one photo end to end (decode + batch-1 inference), p50/p99;
- ``single_call_all_cores_ms``: the same with one ONNX Runtime thread per core, spinning
  within a run and stopping when it ends (the fastest all-core call measured here; Corolla's
  solo session sleeps instead of spinning, docs/operations.md, so this is a lower bound);
- ``throughput[B]``: photos/s with one worker process per core, each decoding a batch of B
  photos and running it, for S seconds; ``best`` is the best B.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def _session(model_dir: Path, threads: int) -> Any:
    import onnxruntime as ort

    from corolla.model_dir import read_metadata

    md = read_metadata(model_dir)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if threads > 1:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    sess = ort.InferenceSession(str(model_dir / md.graph), sess_options=so,
                                providers=["CPUExecutionProvider"])
    return sess, md


def _worker(model_dir: str, photos_path: str, batch: int, seconds: float, offset: int,
            start: Any, out: Any) -> None:
    from corolla.images import preprocess_image
    from harness.workload import read_bodies

    sess, md = _session(Path(model_dir), 1)
    pre = md.preprocessing
    photos = read_bodies(Path(photos_path))
    name = sess.get_inputs()[0].name
    i = offset
    sess.run(None, {name: np.stack([preprocess_image(photos[0], pre)] * batch)})
    start.wait()
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        x = np.stack([preprocess_image(photos[(i + k) % len(photos)], pre) for k in range(batch)])
        sess.run(None, {name: x})
        i += batch
        n += batch
    out.put((n, time.perf_counter() - t0))


def throughput(model_dir: Path, photos: Path, batch: int, seconds: float, procs: int) -> float:
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(procs + 1), ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(str(model_dir), str(photos), batch, seconds,
                                            j * 997, start, out)) for j in range(procs)]
    for p in ps:
        p.start()
    start.wait()
    results = [out.get(timeout=seconds + 120) for _ in ps]
    for p in ps:
        p.join()
    return sum(n for n, _ in results) / max(t for _, t in results)


def cpu_split(model_dir: Path, photos_path: Path, batches: list[int], seconds: float
              ) -> dict[str, Any]:
    from corolla.images import preprocess_image
    from harness.workload import read_bodies

    sess, md = _session(model_dir, 1)
    pre = md.preprocessing
    photos = read_bodies(photos_path)
    name = sess.get_inputs()[0].name
    arrays = []
    c0 = time.thread_time()
    for p in photos:
        arrays.append(preprocess_image(p, pre))
    decode_ms = 1000 * (time.thread_time() - c0) / len(photos)
    infer: dict[str, float] = {}
    for b in batches:
        x = np.stack([arrays[k % len(arrays)] for k in range(b)])
        sess.run(None, {name: x})
        n, c0, t0 = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < max(0.5, seconds / 8) or n < 3:
            sess.run(None, {name: x})
            n += 1
        infer[str(b)] = 1000 * (time.process_time() - c0) / (n * b)

    def single_calls(sess: Any) -> dict[str, float]:
        lat = []
        t_end = time.perf_counter() + max(1.0, seconds / 2)
        i = 0
        while time.perf_counter() < t_end or len(lat) < 20:
            t0 = time.perf_counter()
            sess.run(None, {name: preprocess_image(photos[i % len(photos)], pre)[None]})
            lat.append(1000 * (time.perf_counter() - t0))
            i += 1
        lat.sort()
        return {"p50": statistics.median(lat), "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                "n": len(lat)}

    wide, _ = _session(model_dir, os.cpu_count() or 1)
    wide.run(None, {name: arrays[0][None]})
    return {"cpu_ms_per_photo_decode": decode_ms, "cpu_ms_per_photo_infer": infer,
            "single_call_ms": single_calls(sess),
            "single_call_all_cores_ms": single_calls(wide)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--photos", type=Path, required=True, help="bodies file of raw JPEGs")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-sizes", default="1,8,32", help="for the all-cores throughput")
    ap.add_argument("--cpu-batch-sizes", default="1,2,4,8,16,32",
                    help="for the one-thread inference CPU per photo")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    result: dict[str, Any] = cpu_split(args.model_dir, args.photos,
                                       [int(b) for b in args.cpu_batch_sizes.split(",")],
                                       args.seconds)
    result["procs"] = args.procs
    result["throughput"] = {str(b): throughput(args.model_dir, args.photos, b, args.seconds,
                                               args.procs) for b in batches}
    best = max(result["throughput"], key=lambda b: result["throughput"][b])
    result["best"] = {"batch": int(best), "photos_per_s": result["throughput"][best]}
    print("LIMIT_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
