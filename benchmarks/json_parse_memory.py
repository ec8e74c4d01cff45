#!/usr/bin/env python3
"""How much memory does parsing a TF Serving JSON body take, as a multiple of its size?

    .venv/bin/python benchmarks/json_parse_memory.py

For bodies of several shapes (pixel values as floats and as integers, zeros, strings, b64
objects, and bodies of tiny tokens), each parsed in a fresh process the way Corolla's REST
handler parses it (``tfserving_rest.loads`` then ``parse_predict``): the peak resident memory
above the process's memory before the parse, from a memory cgroup's ``max_usage_in_bytes``
(v1) or ``memory.peak`` (v2) when one can be created (root), else the resident memory kept
after the parse (a lower bound). corolla.admission.JSON_PEAK_FACTOR comes from the largest.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_admission import Cgroup


def bodies() -> dict[str, bytes]:
    import numpy as np
    import orjson

    x = np.random.default_rng(0).random((16, 224, 224, 3)).round(4)
    return {
        "pixels as floats (0.1234)": orjson.dumps({"instances": x.tolist()}),
        "pixels as integers": orjson.dumps({"instances": (x * 255).astype(int).tolist()}),
        "zeros": orjson.dumps({"instances": np.zeros((16, 224, 224, 3), int).tolist()}),
        "strings": b'{"instances": [' + b",".join([b'"a"'] * 5_000_000) + b"]}",
        "b64 objects": b'{"instances": [' + b",".join([b'{"b64":"QQ=="}'] * 1_000_000) + b"]}",
        "[], [], ...": b'{"inputs": {"x": [' + b",".join([b"[]"] * 5_000_000) + b"]}}",
        "[[0]], [[0]], ...": b'{"instances": [' + b",".join([b"[[0]]"] * 3_000_000) + b"]}",
    }


def measure(path: str, cgroup_dir: str) -> None:
    """In the child: parse the body at ``path``; print the peak and the kept multiples."""
    import types

    from corolla.protocols import tfserving_rest as codec

    body = Path(path).read_bytes()
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * page

    cg = Path(cgroup_dir) if cgroup_dir else None
    peak_file = None
    if cg is not None:
        peak_file = cg / ("memory.max_usage_in_bytes" if (cg / "memory.max_usage_in_bytes"
                                                           ).exists() else "memory.peak")
        with contextlib.suppress(OSError):
            peak_file.write_text("0")  # v1: reset the peak to the current usage
        usage = cg / ("memory.usage_in_bytes" if (cg / "memory.usage_in_bytes").exists()
                      else "memory.current")
        before = int(usage.read_text())
    r0 = rss()
    doc = codec.loads(body)
    sig = types.SimpleNamespace(inputs={"x": None})
    doc = {"inputs": doc["instances"]} if "instances" in doc else doc
    _inputs = codec.parse_predict(doc, sig)  # type: ignore[arg-type]  # held until measured
    kept = rss() - r0
    peak = int(peak_file.read_text()) - before if peak_file is not None else None
    print(f"{kept / len(body):.1f} {'' if peak is None else f'{peak / len(body):.1f}'}")


def main() -> int:
    if len(sys.argv) == 3:
        measure(sys.argv[1], sys.argv[2])
        return 0
    print("| body | MiB | peak (x body) | kept after parse (x body) |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in bodies().items():
            path = Path(tmp) / "body.json"
            path.write_bytes(body)
            cg = Cgroup(8 << 30, f"corolla-jsonmem-{os.getpid()}")
            try:
                out = subprocess.run(
                    [sys.executable, __file__, str(path), str(cg.path or "")],
                    capture_output=True, text=True, preexec_fn=cg.enter, check=True)
            finally:
                cg.close()
            kept, _, peak = out.stdout.strip().partition(" ")
            print(f"| {name} | {len(body) / (1 << 20):.1f} | {peak or 'n/a (no cgroup)'} | "
                  f"{kept} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
