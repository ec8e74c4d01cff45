"""The benchmark models, as Corolla version directories (``model.onnx`` + ``corolla.json``).

- ``flowers``: the trained EfficientNet-Lite0 from ``src/corolla/default_model/flowers`` when it
  exists, with the graph its ``corolla.json`` serves by default (int8 since issue 25; Corolla's
  ``--onnx_graph_variant=fp32`` serves its fp32 graph); until then a stand-in with the same
  architecture, input ("images" [-1,224,224,3] NHWC float32, ``(x - 127) / 128``) and output
  ("probabilities", 5 classes), random weights, built with the ONNX helper API. Its cost is
  that of the real model; its answers are meaningless.
- ``cnn``: the TensorFlow image-classification tutorial's CNN (Conv 16/32/64 3x3 same + 2x2 max
  pool, Dense 128, 5 classes) over 180x180 photos scaled to [0, 1]; random weights.
- ``tiny``: a 4-feature MLP (4 -> 16 -> 3, softmax), to measure pure server overhead.
- ``micro`` (``micro_image_model``, only for benchmarks/ab_corolla.py): the tutorial CNN over
  8x8 images, fed 16x16 JPEGs (``micro_jpegs``): the image path (upload, decode, top-k labels)
  with almost no model work, so CPU per request is the server's own cost on that path. At 8x8
  a run costs so little that Corolla runs it unbatched; at 48x48 (``size=48``) it is batched on
  the event loop as the tutorial CNN is.

Every model is written with :mod:`corolla.model_dir`, so Corolla serves it with server-side
decoding exactly as it serves a trained one; the peers read the same ``corolla.json``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from corolla.model_dir import (
    ImagePreprocessing,
    ModelMetadata,
    Signature,
    TensorSpec,
    read_metadata,
    write_metadata,
)
from corolla.model_publish import existing_versions, stage_version

FLOWER_LABELS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
IRIS_LABELS = ("setosa", "versicolor", "virginica")
# (repeats, kernel, stride, expand, cin, cout), as in corolla.training.models.LITE0_STAGES
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)  # fmt: skip


class _Graph:
    """A few helpers over onnx.helper for building a conv net with random weights."""

    def __init__(self, seed: int) -> None:
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.rng = np.random.default_rng(seed)
        self.nodes: list[object] = []
        self.inits: list[object] = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def weight(self, shape: tuple[int, ...], fan_in: int) -> str:
        name = self.name("w")
        w = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.inits.append(self.nh.from_array(w, name))
        return name

    def bias(self, n: int) -> str:
        name = self.name("b")
        self.inits.append(self.nh.from_array(np.zeros(n, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(self.h.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             pads: tuple[int, int, int, int] | None = None) -> str:
        if pads is None:
            p = (k - 1) // 2
            pads = (p, p, p, p)
        w = self.weight((cout, cin // groups, k, k), fan_in=cin // groups * k * k)
        return self.node("Conv", [x, w, self.bias(cout)], kernel_shape=[k, k],
                         strides=[stride, stride], group=groups, pads=list(pads))

    def relu6(self, x: str) -> str:
        lo, hi = self.name("lo"), self.name("hi")
        self.inits.append(self.nh.from_array(np.array(0.0, np.float32), lo))
        self.inits.append(self.nh.from_array(np.array(6.0, np.float32), hi))
        return self.node("Clip", [x, lo, hi])

    def dense(self, x: str, n_in: int, n_out: int) -> str:
        return self.node("Gemm", [x, self.weight((n_in, n_out), n_in), self.bias(n_out)])

    def model(self, graph_name: str, x_in: str, in_shape: list[object], y: str,
              n_out: int) -> bytes:
        import onnx
        from onnx import TensorProto

        self.nodes.append(self.h.make_node("Softmax", [y], ["probabilities"], axis=1))
        graph = self.h.make_graph(
            self.nodes, graph_name,
            [self.h.make_tensor_value_info(x_in, TensorProto.FLOAT, in_shape)],
            [self.h.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                           ["batch", n_out])],
            initializer=self.inits)
        m = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", 17)],
                              producer_name="corolla.benchmarks")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return bytes(m.SerializeToString())


def _same_pads(k: int, stride: int) -> tuple[int, int, int, int]:
    total = k - stride if stride > 1 else k - 1
    before = total // 2
    return (before, before, total - before, total - before)  # ONNX: begins then ends


def efficientnet_lite0_onnx(num_classes: int = 5, seed: int = 0) -> bytes:
    """EfficientNet-Lite0 (BN folded into conv biases, ReLU6, no squeeze-excite) over NHWC."""
    g = _Graph(seed)
    x = g.node("Transpose", ["images"], perm=[0, 3, 1, 2])
    x = g.relu6(g.conv(x, 3, 32, 3, 2, pads=_same_pads(3, 2)))
    for repeats, k, s, e, cin, cout in LITE0_STAGES:
        for j in range(repeats):
            stride, c_in = (s if j == 0 else 1), (cin if j == 0 else cout)
            y = x
            mid = c_in * e
            if e != 1:
                y = g.relu6(g.conv(y, c_in, mid, 1))
            y = g.relu6(g.conv(y, mid, mid, k, stride, groups=mid, pads=_same_pads(k, stride)))
            y = g.conv(y, mid, cout, 1)
            x = g.node("Add", [x, y]) if stride == 1 and c_in == cout else y
    x = g.relu6(g.conv(x, 320, 1280, 1))
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    return g.model("efficientnet_lite0_standin", "images", ["batch", 224, 224, 3],
                   g.dense(x, 1280, num_classes), num_classes)


def tutorial_cnn_onnx(size: int = 180, num_classes: int = 5, seed: int = 1) -> bytes:
    """The TensorFlow tutorial CNN: Conv16/32/64 (3x3 same, ReLU, 2x2 max pool), Dense 128."""
    g = _Graph(seed)
    x = g.node("Transpose", ["images"], perm=[0, 3, 1, 2])
    side, cin = size, 3
    for cout in (16, 32, 64):
        x = g.node("Relu", [g.conv(x, cin, cout, 3)])
        x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        side, cin = side // 2, cout
    x = g.node("Flatten", [x], axis=1)
    x = g.node("Relu", [g.dense(x, cin * side * side, 128)])
    return g.model("tutorial_cnn", "images", ["batch", size, size, 3], g.dense(x, 128, num_classes),
                   num_classes)


def tiny_mlp_onnx(seed: int = 2) -> bytes:
    g = _Graph(seed)
    x = g.node("Relu", [g.dense("features", 4, 16)])
    return g.model("tiny_mlp", "features", ["batch", 4], g.dense(x, 16, 3), 3)


def micro_image_model(work: Path, size: int = 8) -> dict[str, str]:
    """The ``micro`` model (the tutorial CNN over ``size`` x ``size`` images) under
    ``work/models/micro/1``; returns its info like build_models."""
    pre = ImagePreprocessing(input="images", height=size, width=size, resize="squash",
                             scale=1 / 255.0)
    md = _image_metadata(size, pre, {"builder": "benchmarks.harness.models", "trained": False,
                                     "description": f"tutorial CNN over {size}x{size} images"})
    base = _write(work / "models" / "micro", tutorial_cnn_onnx(size=size), md)
    return {"base_path": str(base), "version_dir": str(base / "1"),
            "source": f"TensorFlow tutorial CNN at {size}x{size}, random weights"}


def micro_jpegs(side: int = 16, n: int = 16, seed: int = 0) -> list[bytes]:
    """``n`` ``side`` x ``side`` noise JPEGs for the micro model (16x16: about 0.7 KB)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


def _image_metadata(size: int, pre: ImagePreprocessing, provenance: dict[str, object]
                    ) -> ModelMetadata:
    return ModelMetadata(
        signatures={"serving_default": Signature(
            inputs={"images": TensorSpec(name="images", dtype="float32",
                                         shape=(-1, size, size, 3))},
            outputs={"probabilities": TensorSpec(name="probabilities", dtype="float32",
                                                 shape=(-1, len(FLOWER_LABELS)))},
        )},
        labels=FLOWER_LABELS, scores_output="probabilities", preprocessing=pre,
        provenance=provenance)


def _write(base: Path, graph: bytes, md: ModelMetadata) -> Path:
    if base.exists():
        shutil.rmtree(base)
    with stage_version(base, 1) as staged:
        (staged.path / "model.onnx").write_bytes(graph)
        write_metadata(staged.path, md)
    assert staged.published is not None
    return base


def trained_flowers(repo: Path) -> Path | None:
    """The newest version directory of the trained flowers model in the repository, if any."""
    base = repo / "src" / "corolla" / "default_model" / "flowers"
    try:
        versions = existing_versions(base)
    except Exception:
        return None
    for v in reversed(versions):
        d = base / str(v)
        try:
            md = read_metadata(d)
        except Exception:
            continue
        if md.platform == "onnx" and (d / md.graph).exists() and md.preprocessing is not None:
            return d
    return None


def build_models(work: Path, repo: Path, flowers_dir: Path | None = None) -> dict[str, dict]:
    """Write every benchmark model under ``work/models/<name>/1``; returns name -> info."""
    models = work / "models"
    info: dict[str, dict] = {}
    src = flowers_dir or trained_flowers(repo)
    if src is not None:
        base = models / "flowers"
        if base.exists():
            shutil.rmtree(base)
        shutil.copytree(src, base / "1")
        md = read_metadata(base / "1")
        variant = f", graph variant {md.default_variant}" if md.default_variant else ""
        # Every server (Corolla, the limit, the peers) runs the graph corolla.json names.
        info["flowers"] = {"base_path": str(base), "graph": md.graph,
                           "source": f"trained model copied from {src} ({md.graph}{variant})"}
    else:
        pre = ImagePreprocessing(input="images", height=224, width=224, resize="squash",
                                 scale=1.0, mean=(127.0,) * 3, std=(128.0,) * 3)
        md = _image_metadata(224, pre, {"builder": "benchmarks.harness.models",
                                        "trained": False,
                                        "description": "EfficientNet-Lite0 stand-in"})
        _write(models / "flowers", efficientnet_lite0_onnx(), md)
        info["flowers"] = {"base_path": str(models / "flowers"),
                           "source": "EfficientNet-Lite0 stand-in, random weights "
                                     "(the trained model had not landed)"}
    pre = ImagePreprocessing(input="images", height=180, width=180, resize="squash",
                             scale=1 / 255.0)
    md = _image_metadata(180, pre, {"builder": "benchmarks.harness.models", "trained": False,
                                    "description": "TensorFlow tutorial CNN"})
    _write(models / "cnn", tutorial_cnn_onnx(), md)
    info["cnn"] = {"base_path": str(models / "cnn"),
                   "source": "TensorFlow tutorial CNN (180x180), random weights"}
    md = ModelMetadata(
        signatures={"serving_default": Signature(
            inputs={"features": TensorSpec(name="features", dtype="float32", shape=(-1, 4))},
            outputs={"probabilities": TensorSpec(name="probabilities", dtype="float32",
                                                 shape=(-1, 3))},
        )},
        labels=IRIS_LABELS, scores_output="probabilities",
        provenance={"builder": "benchmarks.harness.models", "trained": False,
                    "description": "4-feature MLP"})
    _write(models / "tiny", tiny_mlp_onnx(), md)
    info["tiny"] = {"base_path": str(models / "tiny"), "source": "4-16-3 MLP, random weights"}
    for name, d in info.items():
        d["version_dir"] = str(Path(d["base_path"]) / "1")
        d["image"] = name != "tiny"
    return info


def models_for_ab(work: Path, repo: Path, model: str, micro_size: int) -> dict[str, dict]:
    """The A/B tools' models under ``work`` (created): the suite's, plus the micro model at
    ``micro_size`` when ``model`` is "micro"."""
    work.mkdir(parents=True, exist_ok=True)
    models = build_models(work, repo)
    if model == "micro":
        models["micro"] = micro_image_model(work, micro_size)
    return models


def micro_photos(micro_size: int) -> list[bytes]:
    """The micro model's JPEGs: 16x16 for the 8x8 model, else the model's own size."""
    return micro_jpegs(16 if micro_size <= 8 else micro_size)
