#!/usr/bin/env python3
"""Corolla's benchmark suite: one command, a markdown table, a PNG chart and the raw numbers.

    python benchmarks/run.py            # full run (about 40 minutes on 2 cores)
    python benchmarks/run.py --quick    # smoke run: a few seconds a point, Corolla + FastAPI

What it measures (see benchmarks/README.md): the in-process limit (Corolla's own decode +
preprocess + ONNX Runtime at the best batch size, all cores), Corolla over REST (b64 JSON and
raw image upload; batching on and off), and the peers (KServe, MLServer, BentoML, LitServe,
FastAPI) serving the same ONNX model with the same decode, each from its own virtual
environment under benchmarks/.venvs/ that this script installs. wrk drives every server on
127.0.0.1 with real photos; CPU and memory of each server's process tree come from psutil.

Writes benchmarks/results/<date>-<name>.{md,png,json}; logs and generated models go to
benchmarks/.work/. Any Python >= 3.11 can start it: it re-runs itself inside the harness
environment benchmarks/.venvs/corolla (Corolla installed editable, psutil, matplotlib, py-spy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: short points, concurrency 1 and 32, Corolla and FastAPI")
    ap.add_argument("--name", default=None, help="results file name (default: quick or full)")
    ap.add_argument("--servers", default=None,
                    help="comma-separated subset of corolla,fastapi,kserve,mlserver,bentoml,"
                         "litserve (default: all; --quick: corolla,fastapi)")
    ap.add_argument("--models", default="flowers,cnn,tiny")
    ap.add_argument("--concurrency", default=None, help="default 1,8,32,64 (--quick: 1,32)")
    ap.add_argument("--tiny-concurrency", default=None, help="default 1,32 (--quick: 32)")
    ap.add_argument("--seconds", type=float, default=None, help="per point (default 15; quick 3)")
    ap.add_argument("--warmup", type=float, default=None, help="per point (default 3; quick 1)")
    ap.add_argument("--photos", type=Path, default=BENCH.parent.parent / "shared" / "datasets"
                    / "flower_photos", help="flower_photos directory (<class>/*.jpg)")
    ap.add_argument("--n-photos", type=int, default=256)
    ap.add_argument("--flowers-model", type=Path, default=None,
                    help="a flowers version directory (default: the trained model in "
                         "src/corolla/default_model/flowers if present, else a stand-in)")
    ap.add_argument("--no-limit", action="store_true", help="skip the in-process limit")
    ap.add_argument("--corolla-workers", default="2",
                    help="extra Corolla variants with --rest_workers N (batching on), "
                         "comma-separated; '' for none (default 2)")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    args = ap.parse_args(argv)
    q = args.quick
    args.name = args.name or ("quick" if q else "full")
    args.servers = (args.servers or ("corolla,fastapi" if q else
                                     "corolla,fastapi,kserve,mlserver,bentoml,litserve")).split(",")
    args.models = args.models.split(",")
    args.concurrency = [int(c) for c in (args.concurrency or ("1,32" if q else "1,8,32,64"))
                        .split(",")]
    args.tiny_concurrency = [int(c) for c in (args.tiny_concurrency or ("32" if q else "1,32"))
                             .split(",")]
    args.corolla_workers = [int(w) for w in args.corolla_workers.split(",") if w.strip()]
    args.seconds = args.seconds if args.seconds is not None else (3.0 if q else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if q else 3.0)
    return args


def main() -> int:
    args = parse_args()
    from harness import envs

    envs.run_in_harness(__file__)  # the harness's environment
    from harness.bench import run_suite

    return run_suite(args)


if __name__ == "__main__":
    sys.exit(main())
