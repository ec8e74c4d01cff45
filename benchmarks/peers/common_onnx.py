"""What every peer server does per request, so that only the server differs from Corolla's.

Reads the same version directory Corolla serves (``model.onnx`` + ``corolla.json``, via the
environment: BENCH_MODEL_DIR) and preprocesses a photo exactly as ``corolla.images`` does for a
JPEG: size and EXIF orientation from Corolla's own header reader (``src/corolla/jpeg_header.py``,
loaded by path; Pillow's header parse where it cannot tell), libjpeg-turbo decode (simplejpeg) with
DCT-domain downscaling to no less than twice the size the resize needs, Pillow resize (squash
or centre crop), ``(p * scale - mean) / std`` in float32. Inference runs through ONNX Runtime
with BENCH_INTRA_THREADS threads (1: one per worker process, as Corolla runs with batching).
No Corolla import: the peers' virtual environments do not have it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import simplejpeg
from PIL import Image

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST, "area": Image.Resampling.BOX}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _load_jpeg_header() -> Any:
    """``read_jpeg_header`` from the repository's src/corolla/jpeg_header.py, by path: the peers'
    environments do not have Corolla, and it depends on simplejpeg only."""
    path = Path(__file__).resolve().parents[2] / "src" / "corolla" / "jpeg_header.py"
    spec = importlib.util.spec_from_file_location("corolla_jpeg_header", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.read_jpeg_header


read_jpeg_header = _load_jpeg_header()

MODEL_NAME = os.environ.get("BENCH_MODEL_NAME", "flowers")
PORT = env_int("BENCH_PORT", 8080)
WORKERS = env_int("BENCH_WORKERS", 2)
MAX_BATCH = env_int("BENCH_MAX_BATCH", 32)
BATCH_WAIT_S = env_float("BENCH_BATCH_WAIT_MS", 2.0) / 1000


class Model:
    def __init__(self, model_dir: str | None = None) -> None:
        d = Path(model_dir or os.environ["BENCH_MODEL_DIR"])
        self.dir = str(d)
        md = json.loads((d / "corolla.json").read_text())
        self.pre = md.get("preprocessing")
        self.labels = md.get("labels", [])
        so = ort.SessionOptions()
        so.intra_op_num_threads = env_int("BENCH_INTRA_THREADS", 1)
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(d / md.get("graph", "model.onnx")), so,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        self.is_image = self.pre is not None
        if self.is_image:
            p = self.pre
            assert p["resize"] in ("squash", "center_crop") and p["layout"] == "NHWC"
            assert p["channels"] == 3 and p["channel_order"] == "RGB"
            self._a = np.asarray([p["scale"] / s for s in p["std"]], np.float32)
            self._b = np.asarray(
                [-m / s for m, s in zip(p["mean"], p["std"], strict=True)], np.float32)

    # Servers that spawn workers pickle the model (KServe): each worker loads its own session.
    def __getstate__(self) -> dict[str, str]:
        return {"dir": self.dir}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["dir"])  # type: ignore[misc]

    # ---- images ----------------------------------------------------------------------------

    def _min_size(self, w: int, h: int) -> tuple[int, int]:
        p = self.pre
        if p["resize"] == "center_crop":
            s = max(p["height"] / p["crop_fraction"] / h, p["width"] / p["crop_fraction"] / w)
            return math.ceil(w * s), math.ceil(h * s)
        return p["width"], p["height"]

    def preprocess(self, data: bytes) -> np.ndarray:
        """Encoded photo -> one (H, W, 3) float32 example."""
        p = self.pre
        header = read_jpeg_header(data) if data[:3] == b"\xff\xd8\xff" else None
        im = None if header is not None else Image.open(io.BytesIO(data))
        if im is None or (im.format == "JPEG" and im.mode in ("RGB", "L")):
            if header is not None:
                w, h, orientation = header
            else:
                assert im is not None
                try:
                    orientation = int(im.getexif().get(0x0112, 1))
                except Exception:
                    orientation = 1
                w, h = im.size
            if orientation in (5, 6, 7, 8):
                mw, mh = self._min_size(h, w)
                mw, mh = mh, mw
            else:
                mw, mh = self._min_size(w, h)
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False,
                                         fastupsample=False, min_width=min(2 * mw, w),
                                         min_height=min(2 * mh, h), strict=True)
            im = Image.fromarray(arr, "RGB")
            if orientation in _TRANSPOSE:
                im = im.transpose(_TRANSPOSE[orientation])
        else:
            im = im.convert("RGB")
        resample = _RESAMPLE[p["interpolation"]]
        if p["resize"] == "squash":
            im = im.resize((p["width"], p["height"]), resample)
        else:
            w, h = im.size
            s = max(p["height"] / p["crop_fraction"] / h, p["width"] / p["crop_fraction"] / w)
            cw, ch = p["width"] / s, p["height"] / s
            left, top = (w - cw) / 2, (h - ch) / 2
            im = im.resize((p["width"], p["height"]), resample,
                           box=(left, top, left + cw, top + ch))
        x = np.asarray(im, dtype=np.uint8).astype(np.float32)
        x *= self._a
        x += self._b
        return x

    # ---- inference -------------------------------------------------------------------------

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: batch})[0]

    def predict_photos(self, photos: list[bytes]) -> list[list[float]]:
        return self.run(np.stack([self.preprocess(d) for d in photos])).tolist()

    def predict_rows(self, rows: list[list[float]]) -> list[list[float]]:
        return self.run(np.asarray(rows, dtype=np.float32).reshape(-1, 4)).tolist()
