"""ONNX Runtime's memory arena keeps what the largest run took for the session's life: the
load-time batch measurements of the default model (batches up to 32 photos) left a server
holding ~400 MB more than its batches need, and in a 1 GiB container that margin was what
big-request traffic then ran out of (an OOM kill seen in CI). ``limit_arena`` gives it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil
import pytest

from corolla.runtimes.onnx import OnnxOptions, OnnxServable
from corolla.serve_options import default_model_base_path

pytestmark = pytest.mark.slow

MiB = 1 << 20


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _photos(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": rng.uniform(0, 255, (rows, 224, 224, 3)).astype(np.float32)}


def test_runs_above_the_limit_give_their_arena_memory_back() -> None:
    version = Path(default_model_base_path()) / "1"
    servable = OnnxServable(version, OnnxOptions(intra_op_threads=1))
    try:
        servable.predict(_photos(1))
        servable.predict(_photos(32))
        held = _rss()
        servable.limit_arena(1)
        servable.predict(_photos(1))  # gives back what the 32-row run took
        after = _rss()
        assert held - after > 150 * MiB, (held / MiB, after / MiB)
        out = servable.predict(_photos(32))  # above the limit: its memory goes back at its end
        assert out and all(v.shape[0] == 32 for v in out.values())
        assert _rss() - after < 100 * MiB, (_rss() / MiB, after / MiB)
        servable.predict(_photos(1))
        assert _rss() - after < 100 * MiB
    finally:
        servable.close()
