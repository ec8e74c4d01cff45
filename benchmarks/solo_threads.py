#!/usr/bin/env python3
"""Are two ONNX Runtime threads faster than one for a lone photo, here and now?

    python3 benchmarks/solo_threads.py [flowers|cnn]

In process, no server: one session with one intra-op thread (how Corolla runs inferences side
by side) and one with two that sleep instead of spinning (Corolla's solo session,
docs/operations.md). Each set runs 150 photos, one at a time from a pool thread with the
photo's decode in between, as a server at concurrency 1 does, and prints the median wall time
of a run for each session; then three times: 8 s of one-thread runs on both cores (a loaded
server), and another set. Models: the benchmark's (benchmarks/.work/models, built by
``benchmarks/run.py``); photos from ../shared/datasets/flower_photos.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main() -> int:
    import onnxruntime as ort

    from corolla.images import preprocess_image
    from corolla.model_dir import read_metadata

    model = sys.argv[1] if len(sys.argv) > 1 else "flowers"
    version = HERE / ".work" / "models" / model / "1"
    md = read_metadata(version)
    pre = md.preprocessing
    assert pre is not None
    photo_dir = HERE.parent.parent / "shared" / "datasets" / "flower_photos"
    photos = [p.read_bytes() for p in sorted(photo_dir.rglob("*.jpg"))[:64]]
    xs = [preprocess_image(p, pre)[None] for p in photos]

    def session(threads: int) -> Any:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        if threads > 1:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(version / md.graph), so,
                                    providers=["CPUExecutionProvider"])

    one, two = session(1), session(2)
    name = one.get_inputs()[0].name
    pool = ThreadPoolExecutor(2)

    def median_ms(sess: Any, n: int = 150) -> float:
        lat = []
        for i in range(n):
            preprocess_image(photos[i % len(photos)], pre)
            t0 = time.perf_counter()
            pool.submit(sess.run, None, {name: xs[i % len(xs)]}).result()
            lat.append(time.perf_counter() - t0)
        return 1000 * statistics.median(lat)

    def load(seconds: float) -> None:
        end = time.perf_counter() + seconds

        def work() -> None:
            i = 0
            while time.perf_counter() < end:
                one.run(None, {name: xs[i % len(xs)]})
                i += 1

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    print(f"{model}: two threads {median_ms(two):.2f} ms, one thread {median_ms(one):.2f} ms")
    for r in range(3):
        load(8)
        print(f"after load {r}: two threads {median_ms(two):.2f} ms, "
              f"one thread {median_ms(one):.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
