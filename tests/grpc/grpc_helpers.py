"""Helpers for the in-process gRPC tests (fixtures are in conftest.py)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from corolla.config import ModelConfig
from corolla.service import PredictionService


def jpeg(rgb: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def configs(models_dir: Path, *names: str) -> list[ModelConfig]:
    return [ModelConfig(name=n, base_path=str(models_dir / n)) for n in names]


@dataclass
class Served:
    service: PredictionService
    channel: grpc.aio.Channel
    port: int
    models_dir: Path


def pixels(rgb: tuple[int, int, int], size: int = 64) -> np.ndarray:
    """The demo model's input for a solid colour (squash resize, scale 1/255)."""
    return np.full((1, size, size, 3), np.array(rgb, np.float32) / 255.0, np.float32)
