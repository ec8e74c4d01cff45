"""``corolla train`` refuses what it cannot train on with one line, before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from corolla.training import cli
from corolla.training.data import (
    DatasetError,
    SplitSpec,
    check_trainable,
    scan_dataset,
    split_dataset,
)


def _train(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["train", *argv, "--no-progress"])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(("extra", "message"), [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch-size", "-2"], "--batch-size must be at least 1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--views", "0"], "--views must be at least 1"),
    (["--split", "0.5,0.6,0.1"], "--split '0.5,0.6,0.1'"),
    (["--split", "a,b,c"], "--split 'a,b,c'"),
    (["--split", "0.5,0.5"], "--split '0.5,0.5'"),
    (["--arch", "small_cnn", "--recipe", "cached"], "--recipe cached needs"),
])
def test_bad_flags_are_one_line(photos: Path, tmp_path: Path, extra: list[str], message: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _train(capsys, str(photos), "--output", str(tmp_path / "m"), *extra)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_paths_are_checked_first(photos: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _train(capsys, str(tmp_path / "nope"), "--output", str(tmp_path / "m"))
    assert code == 2 and "does not exist" in err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, err = _train(capsys, str(photos), "--output", str(a_file))
    assert code == 2 and "is not a directory" in err


def test_dataset_problems_are_one_line(photos: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (photos / "red").rename(one / "red")
    code, err = _train(capsys, str(one), "--output", str(tmp_path / "m"))
    assert code == 2 and "needs at least two class folders" in err and "Traceback" not in err
    (photos / "purple").mkdir()  # an empty class folder
    code, err = _train(capsys, str(photos), "--output", str(tmp_path / "m"), "--arch",
                       "small_cnn", "--epochs", "1")
    assert code == 2 and "no training photos for class 'purple' (0 photos" in err
    assert not (tmp_path / "m").exists()


def test_a_class_too_small_for_the_test_split_is_a_warning(
        photos: Path, caplog: pytest.LogCaptureFixture) -> None:
    lone = photos / "purple"
    lone.mkdir()
    (photos / "red" / "red_000.jpg").rename(lone / "one.jpg")
    ds = scan_dataset(photos)
    splits = split_dataset(ds.samples, SplitSpec())
    with caplog.at_level("WARNING"):
        check_trainable(ds, splits)
    assert "class purple in the validation split" in caplog.text
    assert "class purple in the test split" in caplog.text
    with pytest.raises(DatasetError, match="class 'blue' \\(10 photos, none left for training"):
        check_trainable(ds, split_dataset(ds.samples, SplitSpec(fractions=(0.0, 0.5, 0.5))))
