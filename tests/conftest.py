"""Fixtures shared by the whole suite: model versions on disk and encoded test images."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from corolla.demo_model import write_demo_version

# Colours the demo classifier tells apart, with the label it must answer.
COLOURS = {
    "red": (220, 20, 20),
    "green": (20, 200, 20),
    "blue": (20, 20, 220),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
}

EncodeImage = Callable[..., bytes]


def encode_image(
    colour: str | tuple[int, int, int] = "red",
    fmt: str = "JPEG",
    size: tuple[int, int] = (48, 32),
    mode: str = "RGB",
    **save: object,
) -> bytes:
    """A solid-colour image of ``size`` (w, h) in ``fmt``, converted to ``mode``."""
    rgb = COLOURS[colour] if isinstance(colour, str) else colour
    im = Image.new("RGB", size, rgb)
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers the tests start (in process or as processes) keep their caches (tuning
    measurements, downloaded model versions) under a temporary XDG_CACHE_HOME, not the
    user's ~/.cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture
def make_image() -> EncodeImage:
    return encode_image


@pytest.fixture
def demo_base(tmp_path: Path) -> Path:
    """A base path holding version 1 of the demo colour classifier (16x16 input)."""
    base = tmp_path / "colors"
    write_demo_version(base, 1, size=16)
    return base
