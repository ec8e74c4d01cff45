"""gRPC against REST on the same Corolla, the same photo and the same client: CPU per request.

    python3 benchmarks/grpc_vs_rest.py --name grpc-rest-cnn --model cnn --rounds 3

One ``corolla serve`` per point (the harness's flags: batching on, defaults otherwise, plus
``--flags``), driven by h2load (harness/h2load.py: a C client that costs the machine far less
than the server, both protocols alike) at ``--concurrency`` connections: REST as a raw JPEG
upload (``Content-Type: image/jpeg``, HTTP/1.1), gRPC as TF Serving's ``Predict`` with the
photo as a DT_STRING tensor (HTTP/2). Each round takes another photo from a fixed seeded
sample (both protocols the same one) and runs REST then gRPC. Measured per point: photos/s,
the server's CPU ms per request (its whole process tree, psutil), the client's CPU ms per
request (h2load, wait4), and the rest of the machine. Before each gRPC point one call is made
with grpcio and its answer checked (h2load does not read gRPC's status).

``--model micro`` (the tutorial CNN over 8x8 images, 16x16 JPEGs: almost no model work) shows
each protocol's own cost; ``--floor`` adds two points per round that answer canned bytes with
no model (a bare grpc.aio server and a bare uvicorn ASGI app, harness/protocol_floor.py):
what the two protocol stacks cost with nothing of Corolla's in them.
Writes benchmarks/results/<date>-<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import envs  # noqa: E402

PREDICT = "/tensorflow.serving.PredictionService/Predict"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="results file name")
    p.add_argument("--model", default="cnn", choices=["flowers", "cnn", "micro"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--flags", default="", help="extra corolla serve flags")
    p.add_argument("--floor", action="store_true",
                   help="also the bare protocol stacks, answering canned bytes")
    envs.add_photo_and_out_args(p)
    return p.parse_args(argv)


def _check_grpc(port: int, message: bytes) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(PREDICT, request_serializer=None, response_deserializer=None)
        answer = call(message, timeout=60)
    if not answer:
        raise RuntimeError("empty gRPC answer")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    envs.run_in_harness(__file__)
    from harness import h2load
    from harness.bench import corolla_code, machine_info
    from harness.models import micro_jpegs, models_for_ab
    from harness.procs import Server, cpu_seconds_between, free_port
    from harness.servers import build
    from harness.workload import grpc_formats, pick_photos

    work = (HERE / ".work" / "grpc_vs_rest").resolve()
    models = models_for_ab(work, envs.REPO, args.model, 8)
    if args.model == "micro":
        photos = micro_jpegs(16, n=max(args.rounds, 1))
    else:
        photos = [p.read_bytes() for p in pick_photos(args.photos, max(args.rounds, 1), seed=7)]
    grpc_image = grpc_formats(args.model)["grpc"].image
    assert grpc_image is not None
    tmp = Path(tempfile.mkdtemp(prefix="grpc-vs-rest-"))
    started = dt.datetime.now()
    doc: dict[str, object] = {
        "name": args.name, "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(), "code": corolla_code(), "model": args.model,
        "concurrency": args.concurrency, "seconds": args.seconds, "flags": args.flags,
        "points": [],
    }
    points: list[dict[str, object]] = doc["points"]  # type: ignore[assignment]

    def measure(name: str, srv: Server, url: str, body: Path, headers: list[str], h1: bool,
                r: int) -> None:
        h2load.run(url, body, headers, connections=args.concurrency, seconds=args.warmup,
                   h1=h1)
        before = srv.cpu_snapshot()
        t0 = time.monotonic()
        res = h2load.run(url, body, headers, connections=args.concurrency,
                         seconds=args.seconds, h1=h1)
        after = srv.cpu_snapshot()
        wall = time.monotonic() - t0
        cpu = cpu_seconds_between(before, after)
        busy = after.system_busy - before.system_busy
        n = max(res.requests, 1)
        pt = {"round": r, "variant": name, "rps": res.requests / res.seconds,
              "failed": res.failed, "server_cpu_ms_per_req": 1000 * cpu / n,
              "server_cpu_cores": cpu / wall, "client_cpu_ms_per_req": 1000 * res.client_cpu_s / n,
              "client_cpu_cores": res.client_cpu_s / wall,
              "other_cpu_cores": max(0.0, (busy - cpu - res.client_cpu_s) / wall),
              "mean_ms": res.mean_ms, "photo_bytes": body.stat().st_size}
        points.append(pt)
        print(f"round {r} {name}: {pt['rps']:.1f} req/s, server {pt['server_cpu_ms_per_req']:.3f}"
              f" CPU ms/req ({pt['server_cpu_cores']:.2f} cores), client "
              f"{pt['client_cpu_ms_per_req']:.3f} ms/req, other {pt['other_cpu_cores']:.2f} "
              f"cores, failed {res.failed}", flush=True)

    for r in range(args.rounds):
        photo = photos[r % len(photos)]
        raw = tmp / f"photo-{r}.jpg"
        raw.write_bytes(photo)
        message = grpc_image(photo)
        framed = tmp / f"photo-{r}.grpc"
        framed.write_bytes(h2load.grpc_frame(message))
        for proto in ("rest", "grpc"):
            srv, port, grpc_port = build("corolla", model=args.model, info=models[args.model],
                                         batching=True, work=work)
            srv.argv += shlex.split(args.flags)
            srv.start()
            try:
                rest_url = f"http://127.0.0.1:{port}/v1/models/{args.model}:predict"
                srv.wait_ready(rest_url, photo, "image/jpeg")
                if proto == "rest":
                    measure("REST raw", srv, rest_url, raw, ["content-type: image/jpeg"], True,
                            r)
                else:
                    assert grpc_port is not None
                    _check_grpc(grpc_port, message)
                    measure("gRPC Predict", srv, f"http://127.0.0.1:{grpc_port}{PREDICT}",
                            framed, ["content-type: application/grpc", "te: trailers"], False,
                            r)
            finally:
                srv.stop()
        if args.floor:
            for proto in ("rest", "grpc"):
                fport = free_port()
                srv = Server(f"floor-{proto}", [sys.executable, str(HERE / "harness" /
                                                                    "protocol_floor.py"),
                                                proto, str(fport)],
                             log_path=work / "logs" / f"floor-{proto}.log")
                srv.start()
                try:
                    time.sleep(2.0)
                    if proto == "rest":
                        measure("floor uvicorn", srv, f"http://127.0.0.1:{fport}/x", raw,
                                ["content-type: image/jpeg"], True, r)
                    else:
                        measure("floor grpc.aio", srv, f"http://127.0.0.1:{fport}{PREDICT}",
                                framed, ["content-type: application/grpc", "te: trailers"],
                                False, r)
                finally:
                    srv.stop()
    out = args.out / f"{started:%Y-%m-%d}-{args.name}"
    args.out.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    text = report(doc)
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {out}.md")
    return 0


def report(doc: dict[str, object]) -> str:
    from harness.bench import machine_line

    points: list[dict[str, float]] = doc["points"]  # type: ignore[assignment]
    names = list(dict.fromkeys(str(p["variant"]) for p in points))
    lines = [f"# gRPC against REST {doc['name']}: {doc['started']}", "",
             f"Machine: {machine_line(doc['machine'])}. Corolla code: {doc['code']}.",  # type: ignore[arg-type]
             "",
             f"Model {doc['model']}, h2load at concurrency {doc['concurrency']}, "
             f"{doc['seconds']} s a point after a warm-up; extra flags `{doc['flags']}`.",
             "Command: `python3 benchmarks/grpc_vs_rest.py " + shlex.join(sys.argv[1:]) + "`",
             "", "| variant | req/s by round | mean req/s | server CPU ms/req | vs REST "
             "| client CPU ms/req | other cores | failed |", "|---|---|---|---|---|---|---|---|"]
    mean = {n: statistics.fmean(p["server_cpu_ms_per_req"] for p in points
                                if p["variant"] == n) for n in names}
    rps = {n: statistics.fmean(p["rps"] for p in points if p["variant"] == n) for n in names}
    for n in names:
        ps = [p for p in points if p["variant"] == n]
        base = "REST raw" if not n.startswith("floor") else "floor uvicorn"
        by_round = ", ".join(f"{p['rps']:.0f}" for p in ps)
        lines.append(
            f"| {n} | {by_round} | {rps[n]:.1f} "
            f"| {mean[n]:.3f} | {mean[n] / mean[base]:.2f} "
            f"| {statistics.fmean(p['client_cpu_ms_per_req'] for p in ps):.3f} "
            f"| {statistics.fmean(p['other_cpu_cores'] for p in ps):.2f} "
            f"| {sum(int(p['failed']) for p in ps)} |")
    if "gRPC Predict" in rps and "REST raw" in rps:
        lines += ["", f"gRPC / REST: CPU per request {mean['gRPC Predict'] / mean['REST raw']:.2f}"
                  f" (target <= 1.15), photos/s {rps['gRPC Predict'] / rps['REST raw']:.2f} "
                  "(target >= 0.9)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
