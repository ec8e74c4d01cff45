from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from corolla.images import preprocess_image  # noqa: E402
from corolla.model_dir import is_version_name, read_metadata, write_metadata  # noqa: E402
from corolla.model_publish import existing_versions, stage_version  # noqa: E402
from corolla.runtimes.onnx import OnnxOptions, OnnxServable  # noqa: E402
from corolla.training.export import (  # noqa: E402
    build_metadata,
    export_onnx,
    ort_session,
    verify_export,
)
from corolla.training.models import ServingWrapper, build_model  # noqa: E402
from corolla.training.recipes import LITE0_SPEC, SMALL_CNN_SPEC  # noqa: E402


def _inputs(photos: Path, spec) -> np.ndarray:  # type: ignore[no-untyped-def]
    files = sorted(photos.rglob("*.jpg"))[::5]
    return np.stack([preprocess_image(f.read_bytes(), spec) for f in files])


@pytest.mark.parametrize(
    ("arch", "spec"), [("small_cnn", SMALL_CNN_SPEC), ("efficientnet_lite0", LITE0_SPEC)]
)
def test_export_round_trip_pytorch_and_onnxruntime_agree(
    tmp_path: Path, photos: Path, arch: str, spec
) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = ServingWrapper(build_model(arch, 3, pretrained=arch != "small_cnn")).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, spec)
    x = _inputs(photos, spec)
    assert x.shape[1:] == (spec.height, spec.width, 3)
    assert verify_export(model, path, x) < 1e-4
    sess = ort_session(path)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, out.name) == ("images", "probabilities")
    assert inp.shape[1:] == [spec.height, spec.width, 3] and not isinstance(inp.shape[0], int)
    for n in (1, 3):  # dynamic batch
        p = sess.run(None, {"images": x[:n]})[0]
        assert p.shape == (n, 3)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)


def test_verify_export_rejects_a_mismatch(tmp_path: Path) -> None:
    a = ServingWrapper(build_model("small_cnn", 3)).eval()
    export_onnx(a, tmp_path / "a.onnx", SMALL_CNN_SPEC)
    torch.manual_seed(123)
    b = ServingWrapper(build_model("small_cnn", 3)).eval()  # different weights
    x = np.random.default_rng(0).normal(size=(4, 150, 150, 3)).astype(np.float32)
    with pytest.raises(RuntimeError, match="disagrees"):
        verify_export(b, tmp_path / "a.onnx", x)


def _publish(base: Path, model: torch.nn.Module) -> Path:
    with stage_version(base) as staged:
        export_onnx(model, staged.path / "model.onnx", SMALL_CNN_SPEC)
        write_metadata(staged.path, build_metadata(["a", "b", "c"], SMALL_CNN_SPEC, {"x": 1}))
    assert staged.published is not None
    return staged.published


def test_published_version_is_served_by_the_onnx_runtime(tmp_path: Path, photos: Path) -> None:
    model = ServingWrapper(build_model("small_cnn", 3)).eval()
    v = _publish(tmp_path / "m", model)
    assert v.name == "1"
    md = read_metadata(v)
    assert md.labels == ("a", "b", "c") and md.scores_output == "probabilities"
    assert md.default_signature.inputs["images"].shape == (-1, 150, 150, 3)
    servable = OnnxServable(v, OnnxOptions())
    x = _inputs(photos, SMALL_CNN_SPEC)
    got = servable.predict({"images": x})["probabilities"]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), atol=1e-5)
    assert _publish(tmp_path / "m", model).name == "2"


def test_a_polling_reader_never_sees_a_partial_version(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    model = ServingWrapper(build_model("small_cnn", 3)).eval()
    stop = threading.Event()
    problems: list[str] = []
    polls = 0

    def reader() -> None:
        nonlocal polls
        while not stop.is_set():
            polls += 1
            for n in existing_versions(base):
                v = base / str(n)
                try:
                    read_metadata(v)
                    size = (v / "model.onnx").stat().st_size
                    if size < 1_000_000:
                        problems.append(f"version {n}: model.onnx has {size} bytes")
                except Exception as exc:
                    problems.append(f"version {n}: {exc}")
            for p in base.iterdir():
                if not is_version_name(p.name) and not p.name.startswith("."):
                    problems.append(f"visible non-hidden staging name {p.name}")

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(3):
            _publish(base, model)
    finally:
        stop.set()
        t.join()
    assert polls > 10
    assert problems == []
    assert existing_versions(base) == [1, 2, 3]
    assert [p.name for p in base.iterdir() if p.name.startswith(".")] == []


def test_a_failed_export_publishes_nothing(tmp_path: Path) -> None:
    base = tmp_path / "m"
    with pytest.raises(RuntimeError), stage_version(base) as staged:
        (staged.path / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("training crashed")
    assert list(base.iterdir()) == []


@pytest.mark.parametrize(("mode", "split", "fp32", "int8", "served", "says"), [
    ("auto", "validation", 0.90, 0.90, "int8", "within 0.5 points"),
    ("auto", "validation", 0.90, 0.895, "int8", "within 0.5 points"),  # exactly 0.5 points
    ("auto", "validation", 0.90, 0.894, "fp32", "int8 loses 0.60 points"),
    ("auto", "validation", 0.90, 0.95, "int8", "int8 95.00% against fp32 90.00%"),
    ("int8", "validation", 0.90, 0.50, "int8", "--quantize int8"),
    ("auto", "validation", None, None, "fp32", "no validation photos"),
    ("int8", "validation", None, None, "int8", "--quantize int8"),
    ("auto", "test", 0.90, 0.90, "int8", "decided on the test split"),
])
def test_int8_is_the_default_within_half_a_point(
    mode: str, split: str, fp32: float | None, int8: float | None, served: str, says: str
) -> None:
    from corolla.training.pipeline import decide_variant

    got, reason = decide_variant(mode, split, fp32, int8)
    assert got == served and says in reason, reason
