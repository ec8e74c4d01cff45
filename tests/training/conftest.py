"""Synthetic photo folders for the training tests (made here, never real photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"blue": (30, 30, 200), "green": (30, 200, 30), "red": (200, 30, 30)}


def make_dataset(root: Path, per_class: int = 10, seed: int = 0) -> Path:
    """``root/<colour>/<i>.jpg``: noisy images of one dominant colour per class."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = 40 + int(rng.integers(0, 30)), 40 + int(rng.integers(0, 30))
            pixels = np.clip(rng.normal(colour, 35, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(d / f"{name}_{i:03d}.jpg", quality=90)
    return root


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "photos")
