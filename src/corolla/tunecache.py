"""Load-time measurements kept across restarts: one JSON file per model file and machine.

:func:`corolla.autotune.tune_max_batch_size` times a new version at several batch sizes before
it turns AVAILABLE (about half a second for the flowers model on 2 cores: most of a restart's
time to ready). Its result depends only on the graph that runs, how it runs (ONNX Runtime
threads, optimisation level), the tuning limit and the machine, so a restart of the same model
on the same machine reuses it: :class:`TuneCache` looks it up under a key made of all of these.
The graph file's identity is its resolved path, size, modification time and inode: replacing
or rewriting the file (a new version, a retrained model at the same path, a copy) changes the
key, and the model is measured again. The machine is its CPU model, the CPUs this process may
use and the ONNX Runtime version.

Entries are written atomically (temporary file, then rename) and read leniently: a missing,
unreadable or malformed entry is a miss (the model is measured), a directory that cannot be
written only costs the next start its measurement. Concurrency: any thread; two processes
measuring the same model at once both write, and either entry is right.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corolla.autotune import TuneResult
from corolla.cpus import available_cpus

log = logging.getLogger("corolla.autotune")

FORMAT = "corolla.tune/v1"


def default_tune_cache_dir() -> str:
    """``$XDG_CACHE_HOME/corolla/tuning`` (``~/.cache/corolla/tuning``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "corolla", "tuning")


def file_identity(path: str | os.PathLike[str]) -> str:
    """What changes whenever the file may have: its resolved path, size, mtime and inode."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_identity() -> str:
    """The CPU model, the CPUs this process may use, the ONNX Runtime version."""
    try:
        import onnxruntime

        ort = str(onnxruntime.__version__)
    except ImportError:
        ort = "-"
    return f"{platform.machine()}:{_cpu_model()}:{available_cpus()}:{ort}"


def _result_to_json(r: TuneResult) -> dict[str, Any]:
    return {"max_batch_size": r.max_batch_size,
            "cost_per_row_ms": {str(k): v for k, v in r.cost_per_row_ms.items()},
            "wall_per_row_ms": {str(k): v for k, v in r.wall_per_row_ms.items()}}


def _result_from_json(d: Any) -> TuneResult:
    return TuneResult(
        max_batch_size=int(d["max_batch_size"]),
        cost_per_row_ms={int(k): float(v) for k, v in dict(d["cost_per_row_ms"]).items()},
        wall_per_row_ms={int(k): float(v) for k, v in dict(d["wall_per_row_ms"]).items()})


class TuneCache:
    """Tuning results by key, as files under ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._machine = machine_identity()

    def key(self, model_identity: str, limit: int) -> str:
        text = f"{FORMAT}\n{model_identity}\nlimit={limit}\n{self._machine}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> TuneResult | None:
        try:
            doc = json.loads(self._path(key).read_text(encoding="utf-8"))
            if doc.get("format") != FORMAT:
                return None
            result = _result_from_json(doc["result"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.info("tuning cache entry %s unreadable (%s): measuring again", key[:12], exc)
            return None
        if result.max_batch_size < 1 or 1 not in result.cost_per_row_ms:
            return None
        return result

    def put(self, key: str, result: TuneResult, *, describe: str = "") -> None:
        doc = {"format": FORMAT, "model": describe, "machine": self._machine,
               "result": _result_to_json(result)}
        tmp = self.directory / f".{key}.{uuid.uuid4().hex}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, self._path(key))
        except OSError as exc:
            log.info("tuning cache %s not written (%s): the next start measures again",
                     self.directory, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def get_or_measure(self, model_identity: str | None, limit: int,
                       measure: Callable[[], TuneResult | None], *, describe: str = ""
                       ) -> tuple[TuneResult | None, bool]:
        """(the result, whether it came from the cache). Without an identity (a runtime that
        cannot name its graph) every load measures."""
        if model_identity is None:
            return measure(), False
        key = self.key(model_identity, limit)
        cached = self.get(key)
        if cached is not None:
            return cached, True
        result = measure()
        if result is not None:
            self.put(key, result, describe=describe)
        return result, False
