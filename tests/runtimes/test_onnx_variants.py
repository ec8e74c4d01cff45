"""The ONNX runtime serves the graph variant it is asked for; the embedded default model's int8
graph is served by default and answers as its fp32 graph does on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corolla.cli import build_parser
from corolla.errors import FailedPrecondition
from corolla.images import preprocess_image
from corolla.runtimes.onnx import OnnxOptions, OnnxRuntime, OnnxServable
from corolla.serve_options import build_server_options, default_model_base_path

DEFAULT = Path(default_model_base_path()) / "1"
FLOWERS = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "flower_photos"
if not FLOWERS.is_dir():
    FLOWERS = Path("/work/shared/datasets/flower_photos")


def _load(variant: str, path: Path = DEFAULT) -> OnnxServable:
    return OnnxRuntime(OnnxOptions(intra_op_threads=1, graph_variant=variant)).load(path)


def test_the_default_model_serves_int8_unless_fp32_is_asked_for() -> None:
    assert _load("auto").graph_variant == "int8"
    assert _load("int8").graph_variant == "int8"
    assert _load("fp32").graph_variant == "fp32"
    with pytest.raises(FailedPrecondition, match="graph variant 'fp16' is not in this version"):
        _load("fp16")


def test_a_version_without_variants_serves_its_graph_for_any_variant(demo_base: Path) -> None:
    servable = _load("int8", demo_base / "1")
    assert servable.graph_variant is None  # one graph, nothing to choose
    out = servable.predict({"images": np.zeros((1, 16, 16, 3), np.float32)})
    assert set(out) == {"probabilities"}


def test_the_flag_reaches_the_runtime() -> None:
    def variant(argv: list[str]) -> str:
        from corolla.server import ServerOptions

        opts = build_server_options(build_parser().parse_args(["serve", *argv]), {})
        assert isinstance(opts, ServerOptions)
        return opts.onnx.graph_variant

    assert variant([]) == "auto"
    assert variant(["--onnx_graph_variant=fp32"]) == "fp32"


@pytest.mark.skipif(not FLOWERS.is_dir(), reason=f"real photos not found at {FLOWERS}")
def test_int8_answers_agree_with_fp32_on_real_photos() -> None:
    photos = sorted(FLOWERS.glob("*/*.jpg"))[::40][:80]  # every class, a fixed sample
    assert len(photos) >= 40
    fp32, int8 = _load("fp32"), _load("auto")
    md = fp32.metadata
    assert md.preprocessing is not None
    x = np.stack([preprocess_image(p.read_bytes(), md.preprocessing) for p in photos])
    p32 = fp32.predict({"images": x})["probabilities"]
    p8 = int8.predict({"images": x})["probabilities"]
    assert p8.shape == p32.shape == (len(photos), len(md.labels))
    assert np.allclose(p8.sum(1), 1.0, atol=1e-3)  # softmax stays in float
    agree = float((p8.argmax(1) == p32.argmax(1)).mean())
    # Measured: 99.4% top-1 agreement and mean |dp| 0.005 over the 327 validation photos.
    assert agree >= 0.95, agree
    assert float(np.abs(p8 - p32).mean()) <= 0.02
    assert float(np.median(np.abs(p8 - p32).max(1))) <= 0.05
