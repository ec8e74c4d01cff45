"""How each server under test is started: command line, environment, and its request URL.

Every server listens on 127.0.0.1 on a free port, serves one model from the version directory
the harness built, and runs from its own virtual environment (``benchmarks/.venvs/<name>``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness import envs
from harness.procs import Server, free_port

PEERS_DIR = envs.BENCH / "peers"
ALL_SERVERS = ("corolla", "fastapi", "kserve", "mlserver", "bentoml", "litserve")
# Servers whose batching can be switched off from the command line (measured both ways).
BATCH_SWITCH = ("corolla",)
# Peers with batching of their own (always on, as their docs recommend).
PEER_BATCHING = {"mlserver": True, "bentoml": True, "litserve": True, "kserve": False,
                 "fastapi": False}
WORKERS = 2
MAX_BATCH = 32
BATCH_WAIT_MS = 2.0


def floor(*, model: str, info: dict, port: int, work: Path, flags: list[str]) -> Server:
    """benchmarks/floor_server.py (not started) serving ``model`` on ``port`` with ``flags``
    (e.g. ``["--procs", "2"]``), run by this Python (the harness's environment)."""
    return Server("floor", [sys.executable, str(envs.BENCH / "floor_server.py"),
                            "--model-dir", str(info["version_dir"]), "--port", str(port),
                            *flags],
                  log_path=work / "logs" / f"floor-{model}.log")


def build(server: str, *, model: str, info: dict, batching: bool, work: Path, workers: int = 1
          ) -> tuple[Server, int, int | None]:
    """The server (not started), its REST port and, for Corolla, its gRPC port.

    ``workers``: Corolla's ``--rest_workers`` (the peers' process counts are WORKERS)."""
    port = free_port()
    log = work / "logs" / f"{server}-{model}-{'b' if batching else 'nb'}-w{workers}.log"
    if server == "corolla":
        bindir = envs.python("corolla").parent
        grpc_port = free_port()
        argv = [str(bindir / "corolla"), "serve", "--host", "127.0.0.1",
                f"--rest_api_port={port}", f"--port={grpc_port}", f"--model_name={model}",
                f"--model_base_path={info['base_path']}", "--file_system_poll_wait_seconds=0",
                f"--enable_batching={'true' if batching else 'false'}", "--log_level=WARNING",
                f"--rest_workers={workers}"]
        return Server("corolla", argv, log_path=log), port, grpc_port
    env = {"BENCH_MODEL_DIR": info["version_dir"], "BENCH_MODEL_NAME": model,
           "BENCH_PORT": str(port), "BENCH_WORKERS": str(WORKERS),
           "BENCH_MAX_BATCH": str(MAX_BATCH), "BENCH_BATCH_WAIT_MS": str(BATCH_WAIT_MS),
           "BENCH_INTRA_THREADS": "1", "BENCH_PEERS_DIR": str(PEERS_DIR),
           "PYTHONPATH": str(PEERS_DIR), "PYTHONUNBUFFERED": "1"}
    py = envs.python(server)
    if server == "bentoml":
        argv = [str(py.parent / "bentoml"), "serve", "bentoml_service:OnnxService",
                "--host", "127.0.0.1", "--port", str(port)]
        env["BENTOML_HOME"] = str(work / "bentoml_home")
    elif server == "mlserver":
        folder = work / "mlserver" / model
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.json").write_text(json.dumps({
            "debug": False, "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
            "metrics_port": free_port(), "parallel_workers": WORKERS}))
        ms: dict[str, object] = {"name": model, "implementation": "mlserver_runtime.OnnxRuntime"}
        if batching:
            ms.update(max_batch_size=MAX_BATCH, max_batch_time=BATCH_WAIT_MS / 1000)
        (folder / "model-settings.json").write_text(json.dumps(ms))
        argv = [str(py.parent / "mlserver"), "start", str(folder)]
    else:
        script = {"kserve": "kserve_server.py", "fastapi": "fastapi_server.py",
                  "litserve": "litserve_server.py"}[server]
        argv = [str(py), str(PEERS_DIR / script)]
    return Server(server, argv, env=env, cwd=PEERS_DIR, log_path=log), port, None
