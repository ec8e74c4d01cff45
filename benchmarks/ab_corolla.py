"""A/B of Corolla configurations on one model, alternating rounds, with a markdown report.

    python3 benchmarks/ab_corolla.py --name inline --model cnn --rounds 3 \\
        --variant "threads=--rest_workers=2 --inline_requests=false" \\
        --variant "inline=--rest_workers=2"

Each variant is a set of extra ``corolla serve`` flags (on top of the harness's own: the model,
ports, batching on), or ``@floor`` and benchmarks/floor_server.py's flags to run that
bare-minimum server instead (``--variant 'floor=@floor --procs 2'``), or ``@limit B`` for the
in-process limit at batch size B (harness/limit.py: one process per core decoding and running
batches of B photos, no server; ``--variant 'limit=@limit 32'``; ``@limit B fp32`` runs the
version's fp32 graph variant instead of its default), so that a server's ratio to
the limit is measured in the same alternating rounds; ``--pin CPUS`` starts
the servers under ``taskset -c CPUS`` (a one-core process on this machine stands for a
one-CPU container). Rounds alternate the variants so a drift of the machine hits them alike:
compare the means and the CPU per request, not one point.
Raw JPEG uploads (or ``--format b64``) from ../shared/datasets/flower_photos, wrk at one
concurrency. ``--model micro`` serves an 8x8-input CNN fed 16x16 JPEGs instead: almost no model
work, so the CPU per request is what the server itself costs on the image path (upload, decode
call, labels, answer); run it with the floor server and one pinned process
(``--pin 1 --variant 'one=' --variant 'floor=@floor --procs 1'``). ``--micro-size 48`` makes
its runs costly enough (48x48 input, 48x48 JPEGs) that Corolla batches them on the event loop,
as it does the tutorial CNN's.
Writes benchmarks/results/<date>-<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import envs  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="results file name")
    p.add_argument("--model", default="cnn", choices=["flowers", "cnn", "tiny", "micro"])
    p.add_argument("--format", default="raw", choices=["raw", "b64", "grpc"],
                   help="raw upload, b64 JSON, or TF Serving gRPC Predict (harness/grpc_load.py; "
                        "not for the floor server)")
    p.add_argument("--variant", action="append", required=True,
                   help="NAME=FLAGS (extra corolla serve flags; repeat for each variant)")
    p.add_argument("--micro-size", type=int, default=8,
                   help="input side of the micro model (its JPEGs: 16x16 at 8, else this side)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--pin", default="", help="run the servers under taskset -c PIN")
    envs.add_photo_and_out_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    envs.run_in_harness(__file__)  # the harness's environment
    from harness.bench import corolla_code, machine_info
    from harness.limit import throughput
    from harness.loadgen import ensure_wrk, measure
    from harness.models import micro_photos, models_for_ab
    from harness.servers import build, floor
    from harness.workload import FORMATS, grpc_formats, pick_photos, write_bodies

    variants = []
    for v in args.variant:
        name, _, flags = v.partition("=")
        variants.append((name, shlex.split(flags)))
    ensure_wrk()
    work = (HERE / ".work" / "ab").resolve()
    models = models_for_ab(work, envs.REPO, args.model, args.micro_size)
    fmt = (grpc_formats(args.model)["grpc"] if args.format == "grpc"
           else FORMATS["corolla"][args.format])
    if args.model == "micro":
        photos = micro_photos(args.micro_size)
        bodies = [fmt.image(p) for p in photos] if fmt.image else []
    elif args.model == "tiny":
        if args.format == "grpc":
            raise SystemExit("--format grpc is for the image models")
        from harness.workload import feature_rows

        fmt = FORMATS["corolla"]["b64"]  # the tiny model's JSON rows
        bodies = [fmt.tiny(r) for r in feature_rows(256)] if fmt.tiny else []
    else:
        photos: list[bytes] = [p.read_bytes() for p in pick_photos(args.photos, 256)]
        bodies = [fmt.image(p) for p in photos] if fmt.image else []
    if not bodies:
        raise SystemExit(f"format {args.format} does not apply to model {args.model}")
    body_file = write_bodies(work / f"{args.model}-{args.format}.bin", bodies)
    started = dt.datetime.now()
    doc: dict[str, object] = {
        "name": args.name, "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(), "code": corolla_code(), "model": args.model,
        "format": args.format, "concurrency": args.concurrency,
        "micro_size": args.micro_size if args.model == "micro" else None,
        "seconds": args.seconds,
        "pin": args.pin, "variants": {n: f for n, f in variants}, "points": [],
    }
    points: list[dict[str, object]] = doc["points"]  # type: ignore[assignment]
    raw_file = write_bodies(work / "photos-raw.bin", photos) if args.model != "tiny" else None
    for r in range(args.rounds):
        for name, flags in variants:
            if flags[:1] == ["@limit"]:  # the in-process limit: photos/s, no server
                if raw_file is None:
                    raise SystemExit("@limit needs an image model")
                batch = int(flags[1]) if len(flags) > 1 else 32
                procs = os.cpu_count() or 1
                version_dir = Path(str(models[args.model]["version_dir"]))
                if len(flags) > 2:  # '@limit B VARIANT': another graph variant of the version
                    version_dir = _variant_copy(version_dir, flags[2], work)
                rps = throughput(version_dir, raw_file, batch, args.seconds, procs)
                points.append({"round": r, "variant": name, "rps": rps, "limit": True,
                               "server_cpu_ms_per_req": 1000 * procs / rps, "p50_ms": 0.0,
                               "p99_ms": 0.0, "errors": {}})
                print(f"round {r} {name}: {rps:.1f} photos/s in process (batch {batch}, "
                      f"{procs} processes)", flush=True)
                continue
            srv, port, grpc_port = build("corolla", model=args.model, info=models[args.model],
                                         batching=True, work=work)
            if flags[:1] == ["@floor"]:  # benchmarks/floor_server.py instead of Corolla
                if args.format == "grpc":
                    raise SystemExit("the floor server speaks HTTP only")
                srv = floor(model=args.model, info=models[args.model], port=port, work=work,
                            flags=flags[1:])
            else:
                srv.argv += flags
            if args.pin:
                srv.argv = ["taskset", "-c", args.pin, *srv.argv]
            url = f"http://127.0.0.1:{port}" + fmt.path.format(model=args.model)
            srv.start()
            try:
                if args.format == "grpc":  # ready once the REST API answers a raw upload
                    ready = FORMATS["corolla"]["raw"]
                    srv.wait_ready(f"http://127.0.0.1:{port}"
                                   + ready.path.format(model=args.model), photos[0],
                                   ready.content_type)
                    url = f"grpc://127.0.0.1:{grpc_port}{fmt.path}"
                else:
                    srv.wait_ready(url, bodies[0], fmt.content_type)
                p = measure(srv, url, body_file, fmt.content_type,
                            connections=args.concurrency, seconds=args.seconds,
                            warmup=args.warmup)
            finally:
                srv.stop()
            points.append({"round": r, "variant": name, **p.as_dict()})
            print(f"round {r} {name}: {p.rps:.1f} req/s, {p.server_cpu_cores:.2f} cores, "
                  f"{p.server_cpu_ms_per_req:.2f} CPU ms/req, p50 {p.p50_ms:.1f} "
                  f"p99 {p.p99_ms:.1f} ms, errors {p.errors}", flush=True)
    out = args.out / f"{started:%Y-%m-%d}-{args.name}"
    args.out.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text(report(doc, variants))
    print(f"wrote {out}.md")
    return 0


def _variant_copy(version_dir: Path, variant: str, work: Path) -> Path:
    """A copy of ``version_dir`` whose default graph is ``variant`` (for the limit: it runs
    the graph that corolla.json names)."""
    import dataclasses
    import shutil

    from corolla.model_dir import read_metadata, write_metadata

    out = work / "variants" / variant / "1"
    shutil.rmtree(out.parent, ignore_errors=True)
    shutil.copytree(version_dir, out)
    md = read_metadata(out)
    write_metadata(out, dataclasses.replace(md, graph=md.graph_file(variant), files={}))
    return out


def report(doc: dict[str, object], variants: list[tuple[str, list[str]]]) -> str:
    points: list[dict[str, object]] = doc["points"]  # type: ignore[assignment]
    from harness.bench import ab_report_head

    lines = [
        *ab_report_head(
            "A/B", doc,
            f"{doc['format']} bodies, concurrency {doc['concurrency']}, {doc['seconds']} s a "
            "point after a warm-up, rounds alternating the variants"
            + (f"; servers pinned with `taskset -c {doc['pin']}`" if doc["pin"] else "") + ".",
            "ab_corolla.py"),
        "| variant | extra flags | req/s by round | mean req/s | vs first | vs limit "
        "| CPU ms/req (mean) | p50 ms (mean) | p99 ms (mean) | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = None
    # "vs limit": against the first @limit variant (others may run another graph variant).
    first_limit = next((n for n, f in variants if f[:1] == ["@limit"]), None)
    limits = [float(p["rps"]) for p in points  # type: ignore[arg-type]
              if p.get("limit") and p["variant"] == first_limit]
    limit = statistics.fmean(limits) if limits else None
    for name, flags in variants:
        ps = [p for p in points if p["variant"] == name]
        rps = [float(p["rps"]) for p in ps]  # type: ignore[arg-type]
        mean = statistics.fmean(rps)
        base = base or mean
        errors = sum(sum(p["errors"].values()) for p in ps)  # type: ignore[union-attr]
        lines.append(
            f"| {name} | `{' '.join(flags)}` | {', '.join(f'{x:.0f}' for x in rps)} "
            f"| {mean:.1f} | {mean / base:.3f} "
            f"| {f'{mean / limit:.3f}' if limit else '–'} "
            f"| {statistics.fmean(float(p['server_cpu_ms_per_req']) for p in ps):.3f} "  # type: ignore[arg-type]
            f"| {statistics.fmean(float(p['p50_ms']) for p in ps):.1f} "  # type: ignore[arg-type]
            f"| {statistics.fmean(float(p['p99_ms']) for p in ps):.1f} | {errors} |")
    if limit:
        lines += ["", "A limit row is the in-process limit (photos/s, no server) measured in the "
                  "same rounds; its CPU ms/photo assumes every core busy (cores × 1000 / "
                  "photos/s), and it has no latency."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
