"""Virtual environments: the harness's own (Corolla + measuring tools) and one per peer.

All live under ``benchmarks/.venvs/`` (git-ignored), are created with the interpreter that
runs ``benchmarks/run.py``, and are installed from PyPI with pinned versions. None of these
packages is a dependency of Corolla. An environment is rebuilt when its pins change.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
VENVS = BENCH / ".venvs"

# The same numerical stack in every peer as in Corolla's environment.
COMMON = ["onnxruntime==1.32.0", "simplejpeg==1.9.0", "pillow==13.0.0", "numpy==2.4.6"]
PEERS: dict[str, list[str]] = {
    "kserve": ["kserve==0.21.0"],
    # uvloop 0.22+ raises in asyncio.get_event_loop(), which MLServer 1.7 workers call.
    "mlserver": ["mlserver==1.7.1", "uvloop==0.21.0"],
    "bentoml": ["bentoml==1.4.40"],
    "litserve": ["litserve==0.2.19"],
    "fastapi": ["fastapi==0.163.2", "uvicorn[standard]==0.54.0"],
}
HARNESS = ["psutil==7.2.2", "matplotlib==3.11.2", "py-spy==0.4.3"]


def python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def _requirements(name: str) -> list[str]:
    if name == "corolla":
        return ["-e", str(REPO), *HARNESS]
    return [*PEERS[name], *COMMON]


def ensure(name: str, base_python: str | None = None, quiet: bool = True) -> Path:
    """Create (or refresh) the environment ``name``; returns its python."""
    reqs = _requirements(name)
    stamp_text = "\n".join(reqs)
    if name == "corolla":  # Corolla's own dependencies may change under it
        stamp_text += (REPO / "pyproject.toml").read_text()
    digest = hashlib.sha256(stamp_text.encode()).hexdigest()
    root = VENVS / name
    stamp = root / ".bench-installed"
    if stamp.exists() and stamp.read_text() == digest and python(name).exists():
        return python(name)
    print(f"[env] installing {name}: {' '.join(reqs)}", flush=True)
    if not python(name).exists():
        subprocess.run([base_python or sys.executable, "-m", "venv", str(root)], check=True)
    pip = [str(python(name)), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *reqs], check=True)
    stamp.write_text(digest)
    return python(name)


def versions(name: str) -> dict[str, str]:
    """Installed versions of the packages that matter, for the results file."""
    wanted = {"corolla": ["corolla", "onnxruntime", "numpy", "simplejpeg", "pillow", "starlette",
                          "uvicorn", "uvloop", "httptools", "orjson"],
              }.get(name, [r.split("==")[0].split("[")[0] for r in _requirements(name)]
                    + ["uvicorn", "starlette", "fastapi", "pydantic"])
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except Exception: pass\n"
            "print(json.dumps(out))")
    try:
        res = subprocess.run([str(python(name)), "-c", code, *wanted], capture_output=True,
                             text=True, check=True)
        import json

        return dict(json.loads(res.stdout))
    except (OSError, subprocess.CalledProcessError, ValueError):
        return {}


def run_in_harness(script: str) -> None:
    """Re-run ``script`` (a benchmark's ``__file__``) with the harness's own environment's
    Python (built if needed), unless this is already it; the arguments are kept."""
    if Path(sys.prefix).resolve() == (VENVS / "corolla").resolve():
        return
    py = ensure("corolla")
    os.execv(str(py), [str(py), str(Path(script).resolve()), *sys.argv[1:]])


def default_photos() -> Path:
    """``shared/datasets/flower_photos`` beside the checkout (or beside its parent: a git
    worktree one level further down)."""
    for root in (REPO.parent, REPO.parent.parent):
        if (root / "shared" / "datasets" / "flower_photos").is_dir():
            return root / "shared" / "datasets" / "flower_photos"
    return REPO.parent / "shared" / "datasets" / "flower_photos"


def add_photo_and_out_args(p: argparse.ArgumentParser) -> None:
    """``--photos`` (the flower photos, <class>/*.jpg) and ``--out`` (where results go)."""
    p.add_argument("--photos", type=Path, default=default_photos())
    p.add_argument("--out", type=Path, default=BENCH / "results")
