"""Time from process start to ready: ``corolla serve`` against a bare process, same rounds.

    python3 benchmarks/startup.py --name startup --rounds 5 [--models 1,10]

Corolla: from the moment ``corolla serve`` is started (the embedded default model, or N copies
of it under N names in a models.config) until ``GET /v2/health/ready`` answers 200, polled every
5 ms over one keep-alive connection. The bare process does what any server of both protocols
must do and nothing more: imports onnxruntime, numpy, Pillow, grpcio and uvicorn, creates one
ONNX Runtime session per model (the same graph file Corolla serves) and runs one inference on
each; it is timed until it says so on stdout. Corolla runs twice per round: ``warm`` (its
tuning cache holds this model and machine, as on any restart: see corolla.tunecache) and
``cold`` (an empty tuning cache directory, as on a first start). Rounds alternate the
variants; the report gives the median of each and the ratios to the bare process.

Corolla's own modules are byte-compiled first (``compileall``), as ``pip install`` does for any
installed package (the container image too): run from a source checkout with
``PYTHONDONTWRITEBYTECODE=1`` (set on this machine), every start would otherwise compile ~150
modules from source, about 0.2 CPU s of a start, which no installed server pays and the bare
process's third-party imports do not pay either.
Writes benchmarks/results/<date>-<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import envs  # noqa: E402

BARE = """
import sys
import numpy as np, onnxruntime as ort, PIL.Image, grpc, uvicorn
for graph in sys.argv[1:]:
    s = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    s.run(None, {i.name: np.zeros([1, *i.shape[1:]], np.float32)})
print("READY", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> float:
    """Poll /v2/health/ready until 200; the monotonic time it answered."""
    deadline = time.monotonic() + timeout
    conn: http.client.HTTPConnection | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"corolla serve exited with {proc.returncode}")
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                t = time.monotonic()
                conn.close()
                return t
        except OSError:
            if conn is not None:
                conn.close()
            conn = None
        time.sleep(0.005)
    raise RuntimeError("not ready in time")


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def time_corolla(corolla: str, models: int, base: Path, work: Path, tune_dir: Path
                 ) -> tuple[float, float]:
    """(seconds to ready, CPU seconds the server had used by then)."""
    rest, grpc_port = _free_port(), _free_port()
    argv = [corolla, "serve", f"--rest_api_port={rest}", f"--port={grpc_port}",
            "--host=127.0.0.1", "--file_system_poll_wait_seconds=0",
            f"--tuning_cache_dir={tune_dir}"]
    if models > 1:
        cfg = work / f"models-{models}.config"
        cfg.write_text("model_config_list {\n" + "".join(
            f'  config {{ name: "flowers{i}" base_path: "{base}" model_platform: "onnx" }}\n'
            for i in range(models)) + "}\n")
        argv.append(f"--model_config_file={cfg}")
    with open(work / "server.log", "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        try:
            ready = _ready(rest, proc) - t0
            return ready, _cpu(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)


def time_bare(python: str, graph: Path, models: int) -> tuple[float, float]:
    """(seconds to its READY line, CPU seconds it used: it exits right after)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([python, "-c", BARE, *[str(graph)] * models],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    t = time.monotonic() - t0
    proc.stdout.read()
    _, _, rusage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    if not line.startswith(b"READY"):
        raise RuntimeError("the bare process failed")
    return t, rusage.ru_utime + rusage.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="startup")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--models", default="1,10", help="comma-separated model counts")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    envs.run_in_harness(__file__)
    import compileall

    from harness.bench import corolla_code, machine_info, machine_line

    import corolla
    from corolla.model_dir import read_metadata
    from corolla.serve_options import default_model_base_path

    compileall.compile_dir(str(Path(corolla.__file__).parent), quiet=1)
    base = Path(default_model_base_path())
    graph = base / "1" / read_metadata(base / "1").graph
    corolla = str(Path(sys.executable).with_name("corolla"))
    counts = [int(x) for x in args.models.split(",")]
    work = Path(tempfile.mkdtemp(prefix="corolla-startup-"))
    warm_dir = work / "tuning-warm"
    time_corolla(corolla, 1, base, work, warm_dir)  # fills the warm tuning cache
    started = dt.datetime.now()
    doc: dict[str, object] = {"name": args.name, "started": started.isoformat(timespec="seconds"),
                              "machine": machine_info(), "code": corolla_code(),
                              "graph": str(graph), "points": []}
    points: list[dict[str, object]] = doc["points"]  # type: ignore[assignment]
    for r in range(args.rounds):
        for n in counts:
            runs = {
                "bare": lambda n=n: time_bare(sys.executable, graph, n),
                "corolla warm": lambda n=n: time_corolla(corolla, n, base, work, warm_dir),
                "corolla cold": lambda n=n, r=r: time_corolla(
                    corolla, n, base, work, work / f"tuning-cold-{n}-{r}"),
            }
            for variant, run in runs.items():
                s, cpu = run()
                points.append({"round": r, "models": n, "variant": variant, "seconds": s,
                               "cpu_seconds": cpu})
                print(f"round {r} models {n} {variant}: {s:.3f} s ({cpu:.2f} CPU s)",
                      flush=True)
    lines = [f"# Start to ready {args.name}: {doc['started']}", "",
             f"Machine: {machine_line(doc['machine'])}. Corolla code: {doc['code']}. "  # type: ignore[arg-type]
             f"Graph: `{graph.relative_to(envs.REPO)}`.", "",
             "Command: `python3 benchmarks/startup.py " + " ".join(sys.argv[1:]) + "`", "",
             "| models | variant | seconds by round | median | vs bare | CPU s (median) "
             "| CPU vs bare |", "|---|---|---|---|---|---|---|"]
    for n in counts:
        bare = statistics.median(float(q["seconds"]) for q in points  # type: ignore[arg-type]
                                 if q["models"] == n and q["variant"] == "bare")
        bare_cpu = statistics.median(float(q["cpu_seconds"])  # type: ignore[arg-type]
                                     for q in points
                                     if q["models"] == n and q["variant"] == "bare")
        for variant in ("bare", "corolla warm", "corolla cold"):
            xs = [float(q["seconds"]) for q in points  # type: ignore[arg-type]
                  if q["models"] == n and q["variant"] == variant]
            med = statistics.median(xs)
            cpu = statistics.median(float(q["cpu_seconds"])  # type: ignore[arg-type]
                                    for q in points
                                    if q["models"] == n and q["variant"] == variant)
            lines.append(f"| {n} | {variant} | {', '.join(f'{x:.2f}' for x in xs)} "
                         f"| {med:.3f} | {med / bare:.2f} | {cpu:.2f} | {cpu / bare_cpu:.2f} |")
    lines += ["", "warm: the tuning cache holds this model file and machine (any restart); "
              "cold: an empty tuning cache (a first start). The bare process imports "
              "onnxruntime, numpy, Pillow, grpcio and uvicorn, creates one session per model "
              "and runs one inference on each. CPU s: user + system CPU of the process (every "
              "thread) until ready; steadier than the wall time when others load the machine."]
    out = args.out / f"{started:%Y-%m-%d}-{args.name}"
    args.out.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
