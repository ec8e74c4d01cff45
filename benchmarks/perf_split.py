"""Where a request's CPU goes, by shared object, in Corolla and in the floor server side by side.

    python3 benchmarks/perf_split.py --name cnn-split --model cnn --rounds 2 --seconds 8

Each variant runs as one process pinned to one core (``taskset -c 1``, so Corolla works as each
``--rest_workers`` process does on a 2-core machine: decoding and batches on its event loop)
while wrk sends raw JPEG uploads at ``--concurrency``; ``perf record -e cpu-clock`` samples the
server's processes once per millisecond of CPU for ``--seconds``, and the samples are grouped by
the shared object they fell in: ONNX Runtime, the JPEG decoder (simplejpeg's libjpeg-turbo),
Pillow, numpy, the Python interpreter, libc, the kernel, the event loop and HTTP parser (uvloop,
httptools), ... Reported per group: CPU ms per request (its samples over the requests wrk had
answered in the same window). Rounds alternate the variants.

Variants: ``corolla`` (``corolla serve`` with the benchmark harness's flags: batching on, defaults
otherwise), ``floor`` (benchmarks/floor_server.py, ``--procs 1``: the same decode and inference
with no server features) and ``uvfloor`` (the floor behind uvicorn and an ASGI app, ``--asgi``,
as Corolla serves: what uvicorn adds). What it answers: which part of the work a server adds to.
On the tutorial CNN, against the floor, both spend the same per photo in the decoder and Pillow,
ONNX Runtime costs Corolla 0.12 ms more, and the rest is Python code
(results/2026-11-27-cnn-split.md); against uvfloor, ONNX Runtime costs Corolla 0.07 ms *less*
and the Python interpreter 0.12 ms more (-cnn-split-uv.md): ONNX Runtime's share moves by about
0.1 ms between runs of the same model work.

Needs ``perf`` (Debian package linux-perf) allowed to sample the server's processes (root, or
kernel.perf_event_paranoid <= 2 for one's own processes). Writes
benchmarks/results/<date>-<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import envs  # noqa: E402

# Shared object name (a regular expression on its file name) -> group, first match wins.
GROUPS: tuple[tuple[str, str], ...] = (
    (r"onnxruntime", "ONNX Runtime"),
    (r"^_jpeg|turbojpeg|libjpeg", "JPEG decode (libjpeg-turbo)"),
    (r"^_imaging|^libImaging", "Pillow (resize)"),
    (r"^_multiarray|numpy|libopenblas|libscipy_openblas", "numpy"),
    (r"^libpython|^python3", "Python interpreter"),
    (r"^loop\.|^parser\.|^url_parser\.|^_asyncio", "event loop, HTTP parser (uvloop, httptools)"),
    (r"^orjson", "orjson"),
    (r"kernel|^\[vdso\]", "kernel"),
    (r"^libc\.|^libm\.|^ld-linux|^libstdc\+\+|^libgcc|^libpthread", "libc, libstdc++"),
)
OTHER = "other"
PERIOD_NS = 1_000_000  # one sample per millisecond of CPU


def group_of(dso: str) -> str:
    name = dso if dso.startswith("[") else Path(dso).name  # "[kernel.kallsyms]" stays whole
    for pattern, group in GROUPS:
        if re.search(pattern, name):
            return group
    return OTHER


def parse_report(text: str) -> dict[str, int]:
    """``perf report --sort dso -n --stdio`` lines ("  50.21%   3997  libfoo.so") -> samples
    by shared object."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S.*?)\s*$", line)
        if m:
            out[m.group(2)] = out.get(m.group(2), 0) + int(m.group(1))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="results file name")
    p.add_argument("--model", default="cnn", choices=["flowers", "cnn", "micro"])
    p.add_argument("--micro-size", type=int, default=48,
                   help="input side of the micro model and of its JPEGs")
    p.add_argument("--variants", default="corolla,floor",
                   help="comma-separated: corolla, floor, uvfloor")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--cpu", default="1", help="the core the servers are pinned to")
    envs.add_photo_and_out_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    envs.run_in_harness(__file__)  # the harness's environment
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("perf_split.py needs perf (Debian: apt-get install linux-perf)")
    import psutil
    from harness.bench import corolla_code, machine_info
    from harness.loadgen import _wrk, ensure_wrk
    from harness.models import micro_photos, models_for_ab
    from harness.procs import cpu_seconds_between
    from harness.servers import build, floor
    from harness.workload import FORMATS, pick_photos, write_bodies

    ensure_wrk()
    work = (HERE / ".work" / "perf").resolve()
    models = models_for_ab(work, envs.REPO, args.model, args.micro_size)
    if args.model == "micro":
        photos = micro_photos(args.micro_size)
    else:
        photos = [p.read_bytes() for p in pick_photos(args.photos, 256)]
    fmt = FORMATS["corolla"]["raw"]
    body_file = write_bodies(work / f"{args.model}-raw.bin", photos)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    started = dt.datetime.now()
    doc: dict[str, object] = {
        "name": args.name, "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(), "code": corolla_code(), "model": args.model,
        "micro_size": args.micro_size if args.model == "micro" else None,
        "concurrency": args.concurrency, "seconds": args.seconds, "points": [],
    }
    points: list[dict[str, object]] = doc["points"]  # type: ignore[assignment]
    info = models[args.model]
    for r in range(args.rounds):
        for variant in variants:
            srv, port, _ = build("corolla", model=args.model, info=info, batching=True,
                                 work=work)
            if variant in ("floor", "uvfloor"):
                srv = floor(model=args.model, info=info, port=port, work=work,
                            flags=["--procs", "1", *(["--asgi"] if variant == "uvfloor" else [])])
            elif variant != "corolla":
                raise SystemExit(f"unknown variant {variant!r} (corolla, floor, uvfloor)")
            srv.argv = ["taskset", "-c", args.cpu, *srv.argv]
            url = f"http://127.0.0.1:{port}" + fmt.path.format(model=args.model)
            srv.start()
            try:
                srv.wait_ready(url, photos[0], fmt.content_type)
                _wrk(url, body_file, fmt.content_type, args.concurrency, 3)  # warm-up
                result: dict[str, object] = {}

                def load(result: dict[str, object] = result, url: str = url) -> None:
                    result["wrk"] = _wrk(url, body_file, fmt.content_type, args.concurrency,
                                         args.seconds + 2)[0]

                t = threading.Thread(target=load)
                t.start()
                time.sleep(1)
                pids = [srv.pid, *(c.pid for c in psutil.Process(srv.pid).children(True))]
                with tempfile.TemporaryDirectory() as tmp:
                    data = Path(tmp) / "perf.data"
                    before = srv.cpu_snapshot()
                    t0 = time.monotonic()
                    subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-c",
                                    str(PERIOD_NS), "-o", str(data), "-p",
                                    ",".join(map(str, pids)), "--", "sleep",
                                    str(args.seconds)],
                                   check=True, capture_output=True)
                    wall = time.monotonic() - t0
                    cpu = cpu_seconds_between(before, srv.cpu_snapshot())
                    report = subprocess.run([perf, "report", "-i", str(data), "--sort", "dso",
                                             "-n", "--stdio", "-g", "none"],
                                            check=True, capture_output=True, text=True).stdout
                t.join()
            finally:
                srv.stop()
            w = result["wrk"]
            assert isinstance(w, dict)
            rps = (w["requests"] - w["errors"]["status"]) / (w["duration_us"] / 1e6)
            requests = rps * wall
            by_dso = parse_report(report)
            groups: dict[str, float] = {}
            for dso, n in by_dso.items():
                g = group_of(dso)
                groups[g] = groups.get(g, 0.0) + n * PERIOD_NS / 1e6 / requests
            points.append({"round": r, "variant": variant, "rps": rps,
                           "cpu_ms_per_req": 1000 * cpu / requests,
                           "sampled_ms_per_req": sum(groups.values()),
                           "groups_ms_per_req": groups, "samples_by_dso": by_dso})
            print(f"round {r} {variant}: {rps:.1f} req/s, {1000 * cpu / requests:.3f} CPU ms/req"
                  f" ({sum(groups.values()):.3f} sampled)", flush=True)
    out = args.out / f"{started:%Y-%m-%d}-{args.name}"
    args.out.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text(render(doc, variants))
    print(f"wrote {out}.md")
    return 0


def render(doc: dict[str, object], variants: list[str]) -> str:
    points: list[dict[str, object]] = doc["points"]  # type: ignore[assignment]
    from harness.bench import ab_report_head

    def mean(variant: str, key: str, group: str | None = None) -> float:
        vals = []
        for p in points:
            if p["variant"] != variant:
                continue
            if group is None:
                vals.append(float(p[key]))  # type: ignore[arg-type]
            else:
                vals.append(float(p[key].get(group, 0.0)))  # type: ignore[union-attr]
        return statistics.fmean(vals) if vals else 0.0

    names = sorted({g for p in points for g in p["groups_ms_per_req"]},  # type: ignore[union-attr]
                   key=lambda g: -max(mean(v, "groups_ms_per_req", g) for v in variants))
    diff = len(variants) == 2
    head = " | ".join(variants) + (f" | {variants[0]} − {variants[1]}" if diff else "")
    lines = [
        *ab_report_head(
            "CPU by shared object", doc,
            f"raw JPEG uploads, wrk at concurrency {doc['concurrency']}, each server one "
            f"process pinned to one core; perf samples {doc['seconds']} s a point (one sample "
            "per CPU ms), rounds alternating the variants.", "perf_split.py"),
        "| CPU ms per request | " + head + " |",
        "|---|" + "---|" * (len(variants) + (1 if diff else 0)),
    ]
    rows = [("requests/s (mean)", "rps"), ("CPU ms/request (psutil)", "cpu_ms_per_req"),
            ("sampled by perf", "sampled_ms_per_req")]
    for label, key in rows:
        vals = [mean(v, key) for v in variants]
        fmt = "{:.1f}" if key == "rps" else "{:.3f}"
        cells = [fmt.format(x) for x in vals]
        if diff:
            cells.append(("{:+.1f}" if key == "rps" else "{:+.3f}").format(vals[0] - vals[1]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for g in names:
        vals = [mean(v, "groups_ms_per_req", g) for v in variants]
        cells = [f"{x:.3f}" for x in vals] + ([f"{vals[0] - vals[1]:+.3f}"] if diff else [])
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
