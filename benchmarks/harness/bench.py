"""The suite: builds models and request bodies, measures the limit, then every server."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import psutil

from harness import envs
from harness.loadgen import ensure_wrk, measure
from harness.models import build_models
from harness.servers import BATCH_SWITCH, PEER_BATCHING, build
from harness.workload import bodies_for, feature_rows, formats_for, pick_photos, write_bodies

WORK = envs.BENCH / ".work"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_limit(model_dir: str, photos: Path, *, seconds: float, batches: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "harness.limit", "--model-dir", model_dir, "--photos",
           str(photos), "--seconds", str(seconds), "--batch-sizes", batches]
    res = subprocess.run(cmd, cwd=envs.BENCH, capture_output=True, text=True, check=False)
    for line in res.stdout.splitlines():
        if line.startswith("LIMIT_JSON "):
            return dict(json.loads(line[len("LIMIT_JSON "):]))
    raise RuntimeError(f"limit failed:\n{res.stdout}\n{res.stderr}")


def corolla_code() -> str:
    """The commit of the Corolla code a server starts with (editable install: the work tree),
    with "+dirty" when src/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=envs.REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=envs.REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "loadavg_start": os.getloadavg(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}


def machine_line(m: dict[str, Any]) -> str:
    """``machine_info()`` as one line for a report."""
    load = m.get("loadavg_start") or ()
    return (f"{m.get('cpus')} cores, {m.get('memory_gb')} GiB, {m.get('platform')}, Python "
            f"{m.get('python')}, load average at start " + ", ".join(f"{x:.2f}" for x in load))


def ab_report_head(title: str, doc: dict[str, Any], setup: str, script: str) -> list[str]:
    """The first lines of an A/B tool's markdown report: title, machine and code, the model
    with ``setup`` (how it was driven), and the command that reproduces it."""
    micro = doc.get("micro_size")
    return [
        f"# {title} {doc['name']}: {doc['started']}", "",
        f"Machine: {machine_line(doc['machine'])}. Corolla code: {doc['code']}.", "",
        f"Model {doc['model']}" + (f" ({micro}x{micro} input)" if micro else "") + f", {setup}",
        f"Command: `python3 benchmarks/{script} " + shlex.join(sys.argv[1:]) + "`", "",
    ]


def run_suite(args: argparse.Namespace) -> int:
    started = dt.datetime.now()
    ensure_wrk()
    for s in args.servers:
        if s != "corolla":
            envs.ensure(s)
    WORK.mkdir(exist_ok=True)
    models = build_models(WORK, envs.REPO, args.flowers_model)
    photo_paths = pick_photos(args.photos, args.n_photos)
    photos = [p.read_bytes() for p in photo_paths]
    rows = feature_rows(256)
    raw_photos = write_bodies(WORK / "bodies" / "photos.bin", photos)
    doc: dict[str, Any] = {
        "name": args.name, "started": started.isoformat(timespec="seconds"),
        "settings": {"quick": args.quick, "seconds": args.seconds, "warmup": args.warmup,
                     "concurrency": args.concurrency,
                     "tiny_concurrency": args.tiny_concurrency, "servers": args.servers,
                     "models": args.models, "photos": len(photos),
                     "photo_bytes_mean": sum(map(len, photos)) / len(photos)},
        "machine": machine_info(),
        "models": {k: v for k, v in models.items() if k in args.models},
        "versions": {s: envs.versions(s) for s in args.servers},
        "limit": {}, "points": [], "failures": [], "sample_answers": {},
    }
    out_base = args.out / f"{started:%Y-%m-%d}-{args.name}"
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out_base.with_suffix(".json").write_text(json.dumps(doc, indent=1))

    def limit(model: str, batches: str) -> dict[str, Any] | None:
        log(f"in-process limit: {model} (batch sizes {batches})")
        try:
            res = run_limit(models[model]["version_dir"], raw_photos,
                            seconds=max(2.0, args.seconds * 2 / 3), batches=batches)
            log(f"  {res['best']}")
            return res
        except Exception as exc:
            doc["failures"].append({"what": f"limit {model}", "error": str(exc)})
            log(f"  FAILED: {exc}")
            return None

    for model in args.models:
        info = models[model]
        conc = args.concurrency if info["image"] else args.tiny_concurrency
        # The limit is measured just before this model's servers and again just after (at its
        # best batch size): on a shared machine the two bracket the servers' conditions.
        before = limit(model, "1,32" if args.quick else "1,4,8,16,32") \
            if info["image"] and not args.no_limit else None
        for server in args.servers:
            variants = [(True, 1), (False, 1)] if server in BATCH_SWITCH else \
                [(PEER_BATCHING[server], 1)]
            if server == "corolla":
                variants += [(True, w) for w in args.corolla_workers if w > 1]
            for batching, workers in variants:
                fmts = []
                for fmt in formats_for(server, model):
                    bodies = bodies_for(fmt, info["image"], photos, rows)
                    if bodies is not None:
                        path = WORK / "bodies" / f"{server}-{fmt.name}-{model}.bin"
                        fmts.append((fmt, write_bodies(path, bodies), bodies[0]))
                if not fmts:
                    continue
                srv, port, grpc_port = build(server, model=model, info=info,
                                             batching=batching, work=WORK, workers=workers)
                what = f"{server} {model} batching={'on' if batching else 'off'}" + (
                    f" rest_workers={workers}" if workers > 1 else "")
                code = corolla_code() if server == "corolla" else None
                log(f"start {what}" + (f" (code {code})" if code else ""))
                try:
                    srv.start()
                    f0, _, body0 = fmts[0]
                    answer = srv.wait_ready(
                        f"http://127.0.0.1:{port}{f0.path.format(model=model)}", body0,
                        f0.content_type)
                    doc["sample_answers"][f"{server} {model}"] = answer[:300]
                    for fmt, bodies_path, _ in fmts:
                        url = f"http://127.0.0.1:{port}{fmt.path.format(model=model)}"
                        if fmt.name == "grpc":
                            url = f"grpc://127.0.0.1:{grpc_port}{fmt.path}"
                        for c in conc:
                            p = measure(srv, url, bodies_path, fmt.content_type, connections=c,
                                        seconds=args.seconds, warmup=args.warmup)
                            rec = {"model": model, "server": server, "format": fmt.name,
                                   "batching": batching, "workers": workers, "concurrency": c,
                                   **p.as_dict()}
                            if code:
                                rec["code"] = code
                            doc["points"].append(rec)
                            log(f"  {fmt.name:4s} c={c:<3d} {p.rps:8.1f}/s p50 {p.p50_ms:7.1f} ms"
                                f" p99 {p.p99_ms:7.1f} ms cpu {p.server_cpu_cores:.2f} cores"
                                f" ({p.server_cpu_ms_per_req:.2f} ms/req) other "
                                f"{p.other_cpu_cores:.2f} err {p.errors or ''}")
                            save()
                            if not srv.alive():
                                raise RuntimeError(f"server died:\n{srv.tail()}")
                except Exception as exc:
                    doc["failures"].append({"what": what, "error": str(exc)[-2000:]})
                    log(f"  FAILED: {exc}")
                    traceback.print_exc()
                finally:
                    srv.stop()
        if before is not None:
            after = limit(model, str(before["best"]["batch"]))
            lim = dict(before)
            lim["before"] = before["best"]["photos_per_s"]
            if after is not None:
                lim["after"] = after["best"]["photos_per_s"]
                lim["best"] = {"batch": before["best"]["batch"],
                               "photos_per_s": (lim["before"] + lim["after"]) / 2}
            doc["limit"][model] = lim
            save()
    doc["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    doc["machine"]["loadavg_end"] = os.getloadavg()
    from harness.report import summarize, write_chart, write_markdown

    doc["summary"] = summarize(doc)
    save()
    write_markdown(doc, out_base.with_suffix(".md"))
    write_chart(doc, out_base.with_suffix(".png"))
    log(f"wrote {out_base}.md, .png, .json")
    return 0
