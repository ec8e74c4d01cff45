"""What the load generator sends: real photos (or feature rows) in each server's request format.

Photos are a fixed, seeded sample of ``flower_photos`` (256 by default); every request format
encodes the same photos, and wrk rotates through them.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def pick_photos(root: Path, n: int, seed: int = 0) -> list[Path]:
    files = sorted(p for p in root.glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no photos under {root} (expected <class>/*.jpg)")
    rng = random.Random(seed)
    return sorted(rng.sample(files, min(n, len(files))))


def feature_rows(n: int, seed: int = 0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[round(rng.uniform(0.1, 8.0), 2) for _ in range(4)] for _ in range(n)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _j(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True, kw_only=True)
class Format:
    """One way of sending one example: URL path (``{model}`` filled in), content type, body."""

    name: str  # b64 | raw | json
    path: str
    content_type: str
    image: Callable[[bytes], bytes] | None = None  # photo bytes -> body
    tiny: Callable[[list[float]], bytes] | None = None  # feature row -> body


TF_PREDICT = "/v1/models/{model}:predict"
# server -> format name -> Format
FORMATS: dict[str, dict[str, Format]] = {
    "corolla": {
        "b64": Format(name="b64", path=TF_PREDICT, content_type="application/json",
                      image=lambda d: _j({"instances": [{"b64": _b64(d)}]}),
                      tiny=lambda r: _j({"instances": [r]})),
        "raw": Format(name="raw", path=TF_PREDICT, content_type="image/jpeg",
                      image=lambda d: d),
    },
    "kserve": {
        "b64": Format(name="b64", path=TF_PREDICT, content_type="application/json",
                      image=lambda d: _j({"instances": [{"b64": _b64(d)}]}),
                      tiny=lambda r: _j({"instances": [r]})),
    },
    "mlserver": {
        "b64": Format(name="b64", path="/v2/models/{model}/infer",
                      content_type="application/json",
                      image=lambda d: _j({"inputs": [{"name": "images", "shape": [1],
                                                      "datatype": "BYTES", "data": [_b64(d)]}]}),
                      tiny=lambda r: _j({"inputs": [{"name": "features", "shape": [1, 4],
                                                     "datatype": "FP32", "data": r}]})),
    },
    "bentoml": {
        "b64": Format(name="b64", path="/predict", content_type="application/json",
                      image=lambda d: _j({"instances": [_b64(d)]}),
                      tiny=lambda r: _j({"instances": [r]})),
    },
    "litserve": {
        "b64": Format(name="b64", path="/predict", content_type="application/json",
                      image=lambda d: _j({"b64": _b64(d)}),
                      tiny=lambda r: _j({"features": r})),
    },
    "fastapi": {
        "b64": Format(name="b64", path="/predict", content_type="application/json",
                      image=lambda d: _j({"instances": [{"b64": _b64(d)}]}),
                      tiny=lambda r: _j({"instances": [r]})),
        "raw": Format(name="raw", path="/predict_raw", content_type="image/jpeg",
                      image=lambda d: d),
    },
}


def grpc_formats(model: str) -> dict[str, Format]:
    """TF Serving gRPC Predict with the photo as a DT_STRING tensor (as TF Serving clients
    send encoded images), or the tiny model's row as DT_FLOAT; pre-serialised messages."""
    from corolla.protos.gen.tensorflow_serving.apis import predict_pb2

    def image(d: bytes) -> bytes:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = model
        t = req.inputs["images"]
        t.dtype = 7  # DT_STRING
        t.tensor_shape.dim.add().size = 1
        t.string_val.append(d)
        return bytes(req.SerializeToString())

    def tiny(r: list[float]) -> bytes:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = model
        t = req.inputs["features"]
        t.dtype = 1  # DT_FLOAT
        t.tensor_shape.dim.add().size = 1
        t.tensor_shape.dim.add().size = 4
        t.float_val.extend(r)
        return bytes(req.SerializeToString())

    return {"grpc": Format(name="grpc", path="/tensorflow.serving.PredictionService/Predict",
                           content_type="application/grpc", image=image, tiny=tiny)}


def write_bodies(path: Path, bodies: list[bytes]) -> Path:
    """Records ``<length>\\n<bytes>``, as bench.lua reads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for b in bodies:
            f.write(b"%d\n" % len(b))
            f.write(b)
    return path


def read_bodies(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        n = int(data[pos:nl])
        out.append(data[nl + 1:nl + 1 + n])
        pos = nl + 1 + n
    return out


def formats_for(server: str, model: str) -> list[Format]:
    """Every request format measured for ``server`` (Corolla: REST, and gRPC where built)."""
    fmts = list(FORMATS[server].values())
    if server == "corolla" and grpc_available():
        fmts += list(grpc_formats(model).values())
    return fmts


def grpc_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("corolla.grpc.server") is not None
    except ImportError:
        return False


def bodies_for(fmt: Format, model_is_image: bool, photos: list[bytes],
               rows: list[list[float]]) -> list[bytes] | None:
    if model_is_image:
        return None if fmt.image is None else [fmt.image(p) for p in photos]
    return None if fmt.tiny is None else [fmt.tiny(r) for r in rows]
