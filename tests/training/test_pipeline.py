"""End to end on tiny synthetic photos: the CLI trains, exports, evaluates and publishes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from corolla.model_dir import read_metadata
from corolla.training import cli
from corolla.training.data import SplitSpec, scan_dataset, split_dataset
from corolla.training.features import cache_features
from corolla.training.loaders import ImageDataset, drop_undecodable
from corolla.training.recipes import SMALL_CNN_SPEC


def _corrupt(photos: Path) -> list[Path]:
    bad = [photos / "red" / "truncated.jpg", photos / "green" / "not_an_image.png"]
    good = (photos / "red" / "red_000.jpg").read_bytes()
    bad[0].write_bytes(good[: len(good) // 3])
    bad[1].write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    return bad


class _Identity:
    """Stands in for an ONNX Runtime session: returns its input."""

    def get_inputs(self) -> list[object]:
        return [type("I", (), {"name": "images"})()]

    def run(self, _outputs: None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [feed["images"][:, :2, :2, :]]


def test_undecodable_images_are_reported_and_skipped(photos: Path) -> None:
    bad = _corrupt(photos)
    ds = scan_dataset(photos)
    assert len(ds.samples) == 32  # scanning does not decode
    cache = cache_features(_Identity(), ds.samples, SMALL_CNN_SPEC, augmented=2, progress=False)
    assert len(cache.failures) == 2
    for path, failure in zip(sorted(bad), sorted(cache.failures), strict=True):
        assert failure.startswith(str(path))
    assert len(cache.labels) == 3 * 30
    good, failures = drop_undecodable(ds.samples)
    assert len(good) == 30 and len(failures) == 2
    x, _label = ImageDataset(good, SMALL_CNN_SPEC, train=True)[0]
    assert tuple(x.shape) == (3, 150, 150)


def test_feature_cache_is_reproducible(photos: Path) -> None:
    samples = scan_dataset(photos).samples[:6]
    a = cache_features(_Identity(), samples, SMALL_CNN_SPEC, augmented=2, seed=1, progress=False)
    b = cache_features(_Identity(), samples, SMALL_CNN_SPEC, augmented=2, seed=1, progress=False)
    c = cache_features(_Identity(), samples, SMALL_CNN_SPEC, augmented=2, seed=2, progress=False)
    assert np.array_equal(a.features, b.features)
    assert not np.array_equal(a.features, c.features)


@pytest.mark.parametrize(
    "extra",
    [
        ["--arch", "small_cnn", "--epochs", "2", "--batch-size", "8", "--quantize", "none"],
        ["--recipe", "full", "--epochs", "1", "--batch-size", "8"],  # the GPU recipe, on CPU
        ["--epochs", "2", "--views", "1", "--train-from-block", "15", "--quantize", "int8"],
    ],
)
def test_train_cli_publishes_an_evaluated_version(
    photos: Path, tmp_path: Path, extra: list[str]
) -> None:
    _corrupt(photos)
    base = tmp_path / "models" / "colours"
    argv = [
        "train",
        str(photos),
        "--output",
        str(base),
        "--workdir",
        str(tmp_path / "work"),
        "--split",
        "0.6,0.2,0.2",
        "--no-progress",
        *extra,
    ]
    assert cli.main(argv) == 0
    v = base / "1"
    md = read_metadata(v)
    assert md.labels == ("blue", "green", "red")
    prov = md.provenance
    assert prov["split"]["counts"] == {"train": 20, "validation": 6, "test": 6}
    assert prov["dataset"]["fingerprint_sha256"] == scan_dataset(photos).fingerprint
    assert any("not_an_image.png" in s for s in prov["skipped_images"])
    assert prov["export"]["max_abs_diff_vs_pytorch"] < 1e-4
    metrics = json.loads((v / "metrics.json").read_text())
    test = split_dataset(scan_dataset(photos).samples, SplitSpec(fractions=(0.6, 0.2, 0.2)))
    broken = [s for s in test["test"] if s.path.name in ("truncated.jpg", "not_an_image.png")]
    assert metrics["num_examples"] == 6 - len(broken)
    assert len(metrics["skipped_images"]) == len(broken)
    assert prov["metrics"]["test"]["accuracy"] == metrics["accuracy"]
    for name in (
        "classification_report.txt",
        "confusion_matrix.png",
        "training_curves.png",
        "history.json",
        "split.json",
        "model.onnx",
    ):
        assert (v / name).stat().st_size > 0
    if "none" in extra:
        assert md.graph == "model.onnx" and md.graph_variants == {}
        assert not (v / "model.int8.onnx").exists() and "quantization" not in prov
    else:  # --quantize auto (the default) or int8: both graphs, one chosen by default, and why
        q = json.loads((v / "quantization.json").read_text())
        assert q["size_bytes"]["int8"] < q["size_bytes"]["fp32"] / 2
        assert (v / "int8_metrics.json").exists()
        assert md.graph_variants == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
        decision = prov["quantization"]
        assert decision["decided_on"] == "validation" and decision["tolerance_points"] == 0.5
        acc = decision["accuracy"]
        assert set(acc) == {"fp32", "int8"}
        if "int8" in extra:
            assert decision["mode"] == "int8" and md.default_variant == "int8"
        else:
            within = 100 * (acc["fp32"] - acc["int8"]) <= 0.5 + 1e-9
            assert decision["mode"] == "auto"
            assert md.default_variant == ("int8" if within else "fp32"), decision
            if not within:
                assert "more than 0.5" in decision["reason"]
        assert decision["served"] == md.default_variant and q["default_variant"] == decision
        # The file manifest (written at publication) covers both graphs.
        for graph in md.graph_variants.values():
            assert md.files[graph].size == (v / graph).stat().st_size
    # the split recorded in the model reproduces: evaluate the test split again via the CLI
    out = tmp_path / "eval"
    assert (
        cli.main(
            ["evaluate", str(v), str(photos), "--split", "test", "--out", str(out), "--no-progress"]
        )
        == 0
    )
    again = json.loads((out / "metrics.json").read_text())
    assert again["confusion_matrix"] == metrics["confusion_matrix"]


def test_train_needs_data(tmp_path: Path) -> None:
    assert cli.main(["train", "--output", str(tmp_path / "m")]) == 2


def test_cached_recipe_is_reproducible(photos: Path, tmp_path: Path) -> None:
    import torch

    from corolla.training.recipes import RecipeConfig, run_recipe
    from corolla.training.train import FitConfig

    splits = split_dataset(scan_dataset(photos).samples, SplitSpec(fractions=(0.6, 0.2, 0.2)))
    cfg = RecipeConfig(fit=FitConfig(epochs=1, progress=False), views=1, train_from_block=15)
    torch.manual_seed(123)  # whatever the global RNG holds before, the result is the same
    a = run_recipe(splits, 3, cfg, tmp_path / "a", resume=False).model.state_dict()
    b = run_recipe(splits, 3, cfg, tmp_path / "b", resume=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refit_trains_on_train_and_validation_and_keeps_the_last_epoch(
    photos: Path, tmp_path: Path
) -> None:
    """--refit: the validation photos join training (the feature cache holds them), there is
    no early stopping (every epoch runs, the last one is kept), the test split stays held out
    and is still evaluated; history has no validation numbers (null in the JSON)."""
    from corolla.training.features import FeatureCache

    base = tmp_path / "models" / "colours"
    work = tmp_path / "work"
    argv = ["train", str(photos), "--output", str(base), "--workdir", str(work),
            "--split", "0.6,0.2,0.2", "--no-progress", "--epochs", "3", "--patience", "0",
            "--views", "1", "--train-from-block", "15", "--refit"]  # fmt: skip
    assert cli.main(argv) == 0
    v = base / "1"
    prov = read_metadata(v).provenance
    assert prov["recipe"]["refit"] is True
    assert prov["split"]["counts"] == {"train": 18, "validation": 6, "test": 6}
    history = json.loads((v / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]  # patience 0 would stop a normal run
    assert all(h["val_acc"] is None and h["val_loss"] is None for h in history)
    assert prov["metrics"]["validation_best_epoch"] is None
    assert json.loads((v / "metrics.json").read_text())["num_examples"] == 6
    (cache,) = work.glob("features-*-train.npz")
    # 24 photos (train + validation), one clean and one augmented view each
    cached = FeatureCache.load(cache)
    assert len(np.unique(cached.sample_index)) == 24 and len(cached.labels) == 48
    assert (v / "training_curves.png").stat().st_size > 0
