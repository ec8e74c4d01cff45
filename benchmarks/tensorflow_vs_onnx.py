"""What the TensorFlow backend costs against ONNX Runtime, on the tutorial CNN (numbers only).

    .venv/bin/python benchmarks/tensorflow_vs_onnx.py [--size 180] [--iterations 300] [--rounds 3]

1. Install size: the files of every distribution that ``corolla[tensorflow]`` adds to a plain
   ``corolla`` install (TensorFlow, Keras, tf2onnx and their dependencies), against
   onnxruntime + onnx (what the default backend needs).
2. Load time, cold: a fresh Python process that imports the runtime and loads the version (what
   a server pays for its first version); warm: a second version loaded in the same process.
   Resident memory after the load.
3. Latency: ``Servable.predict`` in-process (what the server's batcher calls), batch 1 and 32,
   median and p99 over ``--iterations`` runs after 10 warm-up runs; each runtime with its
   default thread settings (one intra-op thread per core) and with one thread (what
   ``corolla serve`` gives ONNX Runtime when several batch threads run side by side).

The model is TensorFlow's image classification tutorial CNN (``tf_tutorial.tutorial_cnn``) at
``--size``, saved with ``tf.saved_model.save`` and converted with ``corolla convert``'s code.
Every measurement runs in its own subprocess, one at a time, in ``--rounds`` rounds that alternate
the runtimes; each number is the median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---- children: one measurement per process -----------------------------------------------------


def child_load(kind: str, path: Path, second: Path) -> dict[str, Any]:
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    if kind == "tensorflow":
        from corolla.runtimes.tensorflow import TensorflowRuntime

        runtime: Any = TensorflowRuntime()
    else:
        from corolla.runtimes.onnx import OnnxRuntime

        runtime = OnnxRuntime()
    servable = runtime.load(path)
    cold = time.perf_counter() - t0
    t1 = time.perf_counter()
    servable2 = runtime.load(second)
    warm = time.perf_counter() - t1
    del servable2
    return {"cold_load_s": cold, "warm_load_s": warm, "rss_mib": _rss_mib(),
            "rss_added_mib": _rss_mib() - rss0, "inputs": list(servable.metadata.signatures[
                "serving_default"].inputs)}


def child_latency(kind: str, path: Path, iterations: int, threads: int) -> dict[str, Any]:
    if kind == "tensorflow":
        from corolla.runtimes.tensorflow import TensorflowOptions, TensorflowRuntime

        servable: Any = TensorflowRuntime(TensorflowOptions(
            intra_op_parallelism=threads, inter_op_parallelism=threads)).load(path)
    else:
        from corolla.runtimes.onnx import OnnxOptions, OnnxRuntime

        servable = OnnxRuntime(OnnxOptions(intra_op_threads=threads)).load(path)
    (alias, spec), = servable.metadata.signatures["serving_default"].inputs.items()
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        x = rng.uniform(0, 255, (batch, *spec.shape[1:])).astype(np.float32)
        for _ in range(10):
            servable.predict({alias: x})
        n = iterations if batch == 1 else max(20, iterations // 8)
        times = []
        cpu0 = time.process_time()
        for _ in range(n):
            t = time.perf_counter()
            servable.predict({alias: x})
            times.append(time.perf_counter() - t)
        cpu_ms = (time.process_time() - cpu0) / n * 1e3
        ms = np.array(times) * 1e3
        # CPU time per call hardly depends on what else runs on the machine (with one thread:
        # no pool spinning either), so it is the steadiest number on a shared machine.
        out[f"batch{batch}"] = {"median_ms": float(np.median(ms)),
                                "p99_ms": float(np.percentile(ms, 99)), "cpu_ms": cpu_ms,
                                "runs": n}
    return out


# ---- install size --------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _closure(roots: list[str]) -> set[str]:
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [_norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(_norm(req.name))
    return seen


def _size_mib(names: set[str]) -> float:
    total = 0
    for name in names:
        dist = metadata.distribution(name)
        for f in dist.files or []:
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                total += p.stat().st_size
    return total / 2**20


def install_sizes() -> dict[str, Any]:
    from packaging.requirements import Requirement

    corolla = metadata.distribution("corolla")
    base_roots, tf_roots = [], []
    for raw in corolla.requires or []:
        req = Requirement(raw)
        if req.marker is None:
            base_roots.append(req.name)
        elif req.marker.evaluate({"extra": "tensorflow"}) and not req.marker.evaluate(
                {"extra": ""}):
            tf_roots.append(req.name)
    base = _closure(base_roots)
    added = _closure(tf_roots) - base
    onnx = _closure(["onnxruntime", "onnx"]) - _closure(
        [r for r in base_roots if _norm(r) not in ("onnxruntime", "onnx")])
    sizes = {n: _size_mib({n}) for n in sorted(added)}
    return {"tensorflow_extra_mib": sum(sizes.values()), "tensorflow_extra_dists": sizes,
            "onnx_backend_mib": _size_mib(onnx), "onnx_backend_dists": sorted(onnx),
            "versions": {n: metadata.version(n) for n in
                         ("tensorflow-cpu", "keras", "tf2onnx", "onnxruntime") if _has(n)}}


def _has(name: str) -> bool:
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


# ---- the parent ------------------------------------------------------------------------------


def _child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def build(work: Path, size: int) -> dict[str, Path]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from corolla.convert_cli import convert_saved_model

    # The tutorial CNN as TensorFlow users save it (test support, shared with the tests).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
    import tf_tutorial

    paths: dict[str, Path] = {}
    for name, seed in (("a", 0), ("b", 1)):
        sm = tf_tutorial.save_keras(tf_tutorial.tutorial_cnn(size, size, seed=seed),
                                    work / f"tf_{name}" / "1", "saved_model")
        report = convert_saved_model(sm, work / f"onnx_{name}", version=1)
        if not report.ok:
            raise RuntimeError("\n".join(report.lines()))
        paths[f"tensorflow_{name}"], paths[f"onnx_{name}"] = sm, work / f"onnx_{name}" / "1"
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=180, help="image size (the tutorial's: 180)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per runtime")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        what, kind, *rest = args.child
        if what == "load":
            res = child_load(kind, Path(rest[0]), Path(rest[1]))
        else:
            res = child_latency(kind, Path(rest[0]), int(rest[1]), int(rest[2]))
        print(json.dumps(res))
        return 0

    results: dict[str, Any] = {"model": f"tutorial CNN {args.size}x{args.size}x3, 5 classes",
                               "cpus": os.cpu_count(), "install": install_sizes(),
                               "loadavg_before": os.getloadavg()}
    kinds = ("tensorflow", "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp), args.size)
        # Rounds alternate the runtimes so that load from other processes on a shared machine
        # falls on both alike; each statistic is the median over the rounds.
        loads: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        lats: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for kind in kinds:
                loads[kind].append(_child(["load", kind, str(paths[f"{kind}_a"]),
                                           str(paths[f"{kind}_b"])]))
                for threads in (0, 1):
                    lats.setdefault((kind, threads), []).append(_child(
                        ["latency", kind, str(paths[f"{kind}_a"]), str(args.iterations),
                         str(threads)]))
        for kind in kinds:
            results[kind] = {"load": _median_dicts(loads[kind]),
                             "latency": _median_dicts(lats[(kind, 0)]),
                             "latency_1_thread": _median_dicts(lats[(kind, 1)])}
    results["loadavg_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(report_table(results))
    return 0


def _median_dicts(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Key by key, the median of numbers (recursively); other values from the first item."""
    out: dict[str, Any] = {}
    for key, first in items[0].items():
        values = [it[key] for it in items]
        if isinstance(first, dict):
            out[key] = _median_dicts(values)
        elif isinstance(first, int | float) and not isinstance(first, bool):
            out[key] = float(np.median(values))
        else:
            out[key] = first
    return out


def report_table(r: dict[str, Any]) -> str:
    tf, ox, inst = r["tensorflow"], r["onnx"], r["install"]
    rows = [
        ("install size (MiB)", f"{inst['tensorflow_extra_mib']:.0f} (added by the extra)",
         f"{inst['onnx_backend_mib']:.0f} (onnxruntime + onnx)"),
        ("first load, fresh process (s)", f"{tf['load']['cold_load_s']:.2f}",
         f"{ox['load']['cold_load_s']:.2f}"),
        ("next load, same process (s)", f"{tf['load']['warm_load_s']:.3f}",
         f"{ox['load']['warm_load_s']:.3f}"),
        ("resident memory after load (MiB)", f"{tf['load']['rss_mib']:.0f}",
         f"{ox['load']['rss_mib']:.0f}"),
    ]
    for lat, label in (("latency", "default threads"), ("latency_1_thread", "1 thread")):
        for b in ("batch1", "batch32"):
            stats = ("median_ms", "p99_ms") + (("cpu_ms",) if lat == "latency_1_thread" else ())
            for stat in stats:
                what = {"median_ms": "median", "p99_ms": "p99", "cpu_ms": "CPU time"}[stat]
                rows.append((f"predict, {label}, {b.replace('batch', 'batch ')}, {what} (ms)",
                             f"{tf[lat][b][stat]:.2f}", f"{ox[lat][b][stat]:.2f}"))
    load = ", ".join(f"{x:.1f}" for x in r["loadavg_before"])
    lines = [f"{r['model']}, {r['cpus']} CPUs (load average before: {load}); "
             f"versions: {inst['versions']}", "",
             "| | TensorFlow (SavedModel) | ONNX Runtime (converted) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
