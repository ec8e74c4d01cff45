#!/usr/bin/env python3
"""Replay issue 22's hostile requests against a Corolla server and report what each cost.

    .venv/bin/python benchmarks/attack_replay.py                 # this checkout
    git worktree add /tmp/c288 288fb0a && \\
        PYTHONPATH=/tmp/c288/src .venv/bin/python benchmarks/attack_replay.py --name 288fb0a

Starts ``corolla serve`` (the default flowers model) on loopback and sends, one after another:
a 41-byte TF Predict whose one float claims shape [2^28] (three times), a TF Predict padded to
160 MB whose shape the model refuses (four times: is the memory given back?), a V2 REST binary
BYTES input of shape [2^28] with 8 bytes of data, V2 JSON inputs of shape [0] and [0, 2^63], a
TF Predict of DT_STRING shape [0], undecodable protobuf bytes, and request headers of 70, 100
and 200 KB. For each: the answer, the time, and the server's resident memory after it (and 3 s
later for the first). Writes benchmarks/results/<date>-attack-replay[-NAME].md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default="", help="suffix of the results file (e.g. the commit)")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    args = ap.parse_args()
    import grpc
    import httpx
    import psutil

    from corolla.protos.gen.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    rest, gport = free_port(), free_port()
    log = BENCH / ".work" / "attack-replay.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "corolla", "serve", "--host=127.0.0.1",
                                 f"--rest_api_port={rest}", f"--port={gport}"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{rest}"
    rows: list[tuple[str, str, float, int]] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        ps = psutil.Process(proc.pid)

        def rss() -> int:
            return int(ps.memory_info().rss >> 20)

        rows.append(("(idle)", "", 0.0, rss()))
        channel = grpc.insecure_channel(f"127.0.0.1:{gport}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def run(what: str, call: Callable[[], str]) -> None:
            t0 = time.monotonic()
            try:
                answer = call()
            except grpc.RpcError as exc:
                answer = f"{exc.code().name}: {(exc.details() or '')[:70]}"  # type: ignore[attr-defined]
            except httpx.HTTPError as exc:
                answer = type(exc).__name__
            rows.append((what, answer, time.monotonic() - t0, rss()))

        def predict(dtype: int, shape: list[int], **fields: list[object]) -> Callable[[], str]:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "flowers"
            tp = req.inputs["images"]
            tp.dtype = dtype
            for d in shape:
                tp.tensor_shape.dim.add().size = d
            for name, values in fields.items():
                getattr(tp, name).extend(values)
            return lambda: (stub.Predict(req, timeout=60), "OK")[1]

        for i in range(3):
            run(f"TF Predict, 41 bytes: 1 float, shape [2^28] ({i + 1})",
                predict(1, [1 << 28], float_val=[1.0]))
        time.sleep(3)
        rows.append(("(3 s later)", "", 0.0, rss()))
        for i in range(4):
            run(f"TF Predict padded to 160 MB, wrong shape ({i + 1})",
                predict(1, [400, 224, 224, 2], float_val=[1.0]))

        def http(method: str, path: str, **kw: object) -> Callable[[], str]:
            def call() -> str:
                r = httpx.request(method, url + path, timeout=60, **kw)  # type: ignore[arg-type]
                return f"{r.status_code}: {r.text[:70]}"
            return call

        header = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES",
                                         "shape": [1 << 28],
                                         "parameters": {"binary_data_size": 8}}]}).encode()
        run("V2 REST binary: BYTES [2^28], 8 bytes of data",
            http("POST", "/v2/models/flowers/infer", content=header + b"\x04\0\0\0abcd",
                 headers={"Inference-Header-Content-Length": str(len(header))}))
        for shape in ([0], [0, 1 << 63]):
            run(f"V2 JSON: BYTES shape {shape}", http(
                "POST", "/v2/models/flowers/infer",
                json={"inputs": [{"name": "images", "datatype": "BYTES", "shape": shape,
                                  "data": []}]}))
        run("TF Predict: DT_STRING shape [0]", predict(7, [0]))
        raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        run("TF Predict: undecodable bytes",
            lambda: (raw(b"\xff\xff\xff\xff", timeout=10), "OK")[1])
        for kb in (70, 100, 200):
            run(f"headers of {kb} KB (limit 64 KiB)",
                http("GET", "/v1/models/flowers", headers={"x-big": "a" * (kb * 1000)}))
        channel.close()
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if proc.poll() is None:
            proc.kill()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=BENCH).stdout.strip()
    import corolla

    lines = [f"# Issue 22's hostile requests ({dt.date.today().isoformat()})", "",
             f"`{' '.join(['benchmarks/attack_replay.py', *sys.argv[1:]])}`, corolla from "
             f"`{Path(corolla.__file__).parent}` (this checkout: {commit}).", "",
             "| request | answer | seconds | server RSS after (MiB) |", "|---|---|---|---|"]
    for what, answer, seconds, mem in rows:
        answer = answer.replace("|", "/").replace("\n", " ")
        lines.append(f"| {what} | {answer} | {seconds:.2f} | {mem} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.name}" if args.name else ""
    (args.out / f"{dt.date.today().isoformat()}-attack-replay{suffix}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
