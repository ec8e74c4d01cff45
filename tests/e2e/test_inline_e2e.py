"""``--inline_requests``: a real ``corolla serve`` that decodes and infers on its event loop.

The mode a process with one core runs in by default (``--rest_workers`` as many as the cores, or
a one-CPU container). Many clients at once, small and multi-megabyte uploads, JSON and raw
bodies and a broken photo: every answer is the right one, the bad one fails alone, and the
server keeps answering its status and health endpoints meanwhile.
"""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from corolla.demo_model import write_demo_version

pytestmark = pytest.mark.slow

RGB = {"red": (230, 20, 20), "green": (20, 210, 20), "blue": (20, 20, 230)}


def photo(colour: str, size: tuple[int, int], seed: int) -> bytes:
    """A noisy photo of one colour: big sizes give multi-megabyte bodies (many TCP segments)."""
    rng = np.random.default_rng(seed)
    base = np.array(RGB[colour], np.int16)
    px = np.clip(base + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_many_clients_with_inline_requests_get_their_own_answers(
    tmp_path: Path, start_corolla: Any
) -> None:
    write_demo_version(tmp_path / "models" / "colours", 1)
    server = start_corolla("--model_name=colours", "--model_base_path=models/colours",
                           "--inline_requests=true")
    server.wait_available("colours")
    assert "whole requests run on the event loop" in server.log()

    jobs: list[tuple[str, str, bytes]] = []  # (expected, kind, photo)
    colours = list(RGB)
    for i in range(48):
        colour = colours[i % 3]
        size = (2400, 1800) if i % 8 == 0 else (64, 48)
        jobs.append((colour, "json" if i % 2 else "raw", photo(colour, size, i)))
    jobs.append(("error", "raw", b"\xff\xd8\xff\xe0 not really a jpeg"))
    assert max(len(p) for _, _, p in jobs) > 1_000_000

    def call(job: tuple[str, str, bytes]) -> tuple[str, int, Any]:
        expected, kind, data = job
        with httpx.Client(base_url=server.url, timeout=60) as c:
            if kind == "raw":
                r = c.post("/v1/models/colours:predict", content=data,
                           headers={"Content-Type": "image/jpeg"})
            else:
                r = c.post("/v1/models/colours:predict",
                           json={"instances": [{"b64": base64.b64encode(data).decode()}]})
        return expected, r.status_code, r.json()

    probes: list[int] = []
    stop = threading.Event()

    def probe() -> None:  # health and status keep answering while uploads are served
        with httpx.Client(base_url=server.url, timeout=10) as c:
            while not stop.is_set():
                probes.append(c.get("/v2/health/ready").status_code)
                probes.append(c.get("/v1/models/colours").status_code)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, jobs))
    finally:
        stop.set()
        prober.join()
    assert probes and set(probes) == {200}
    for expected, code, doc in results:
        if expected == "error":
            assert code == 400 and "image 0" in doc["error"], doc
            continue
        assert code == 200, doc
        pred = doc["predictions"][0]
        probs = pred["probabilities"] if isinstance(pred, dict) else pred
        label = pred["label"] if isinstance(pred, dict) and "label" in pred else None
        if label is not None:
            assert label == expected
        else:
            assert int(np.argmax(probs)) == list(RGB).index(expected)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/v1/models/colours").json()["model_version_status"][0]["state"] == (
            "AVAILABLE")
