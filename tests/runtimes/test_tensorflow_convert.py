"""``corolla convert``: SavedModel versions into ONNX versions, with a report."""

from __future__ import annotations

from pathlib import Path

import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import numpy as np  # noqa: E402
import tf_tutorial  # noqa: E402

from corolla.cli import main  # noqa: E402
from corolla.convert_cli import convert_saved_model  # noqa: E402
from corolla.model_dir import read_metadata  # noqa: E402
from corolla.runtimes.onnx import OnnxRuntime  # noqa: E402

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def cnn_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("convert")
    return tf_tutorial.save_keras(tf_tutorial.tutorial_cnn(24, 24), root / "cnn" / "1", "export")


def test_convert_tutorial_cnn(cnn_version: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "onnx"
    assert main(["convert", str(cnn_version), "--output", str(out), "--version", "3"]) == 0
    report = capsys.readouterr().out
    assert "max |onnx - tensorflow|" in report
    assert "signature 'serve'" in report  # the second signature is reported as not converted
    md = read_metadata(out / "3")
    assert md.platform == "onnx"
    assert md.provenance["source_signature"] == "serving_default"
    alias = tf_tutorial.input_alias(cnn_version)
    (spec,) = md.signatures["serving_default"].inputs.values()
    assert (spec.name, spec.shape) == (alias, (-1, 24, 24, 3))

    x = np.random.default_rng(0).uniform(0, 255, (3, 24, 24, 3)).astype(np.float32)
    want = tf.saved_model.load(str(cnn_version)).signatures["serving_default"](
        **{alias: tf.constant(x)})["output_0"].numpy()
    got = OnnxRuntime().load(out / "3").predict({alias: x})["output_0"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_unsupported_ops_are_reported_and_nothing_is_published(cnn_version: Path,
                                                               tmp_path: Path) -> None:
    src = tf_tutorial.save_jpeg_model(tf_tutorial.tutorial_cnn(16, 16), tmp_path / "jpeg" / "1")
    report = convert_saved_model(src, tmp_path / "out")
    assert not report.ok and report.published is None
    assert any("DecodeJpeg" in line for line in report.not_converted)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert "FAILED" in "\n".join(report.lines())


def test_missing_signature(cnn_version: Path, tmp_path: Path) -> None:
    report = convert_saved_model(cnn_version, tmp_path / "out", signature="nope")
    assert not report.ok and "no signature 'nope'" in (report.error or "")
