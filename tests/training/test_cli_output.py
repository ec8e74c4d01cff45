"""Where ``corolla train`` and ``corolla evaluate`` put their reports, and what they print.

``evaluate`` writes into the version directory (``eval-<split>/``) or ``--output``, never into
the current directory; the last line printed names the folder. Without a terminal there are no
progress bars (no carriage returns in a log): each epoch is one plain log line.
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from corolla.demo_model import write_demo_version
from corolla.training import cli


@pytest.fixture
def version(tmp_path: Path) -> Path:
    return write_demo_version(tmp_path / "models" / "colours", 1, size=16)


def _evaluate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["evaluate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_writes_into_the_version_directory(
    photos: Path, version: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code, out, err = _evaluate(capsys, str(version), str(photos))
    assert code == 0, err
    report = version / "eval-all"
    for name in ("metrics.json", "classification_report.txt", "confusion_matrix.png"):
        assert (report / name).stat().st_size > 0
    assert list(cwd.iterdir()) == []
    assert out.rstrip("\n").splitlines()[-1].startswith(f"report and plots in {report}/: ")
    assert "\r" not in err  # stderr is not a terminal here: no progress bar


@pytest.mark.parametrize("flag", ["--output", "-o", "--out"])
def test_evaluate_output_flag(
    photos: Path, version: Path, tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str],
) -> None:
    out_dir = tmp_path / "reports" / "here"
    code, out, err = _evaluate(capsys, str(version), str(photos), flag, str(out_dir))
    assert code == 0, err
    assert (out_dir / "metrics.json").exists()
    assert not (version / "eval-all").exists()
    assert f"report and plots in {out_dir}/" in out.splitlines()[-1]


def test_evaluate_unwritable_output_is_one_line(
    photos: Path, version: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _out, err = _evaluate(capsys, str(version), str(photos), "--output",
                                str(blocker / "sub"))
    assert code == 2
    assert "cannot write the report into" in err and "--output" in err
    assert "Traceback" not in err


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("tty", "no_progress", "bars"), [
    (True, False, True), (True, True, False), (False, False, False), (False, True, False),
])
def test_progress_bars_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, tty: bool, no_progress: bool, bars: bool,
) -> None:
    monkeypatch.setattr("sys.stderr", _Stream(tty))
    assert cli._progress(argparse.Namespace(no_progress=no_progress)) is bars


def test_train_without_a_terminal_prints_plain_lines_and_says_where_the_report_is(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("torch")
    base = tmp_path / "models" / "colours"
    caplog.set_level(logging.INFO, logger="corolla")
    argv = ["train", str(photos), "--output", str(base), "--workdir", str(tmp_path / "work"),
            "--split", "0.6,0.2,0.2", "--arch", "small_cnn", "--epochs", "1",
            "--batch-size", "8"]  # fmt: skip
    assert cli.main(argv) == 0  # no --no-progress: the captured stderr is not a terminal
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    assert any(r.getMessage().startswith("epoch 1: loss ") for r in caplog.records)
    lines = captured.out.rstrip("\n").splitlines()
    v = base / "1"
    assert lines[-2] == f"published {v}"
    assert lines[-1].startswith(f"report and plots in {v}/: classification_report.txt")
    for name in ("classification_report.txt", "metrics.json", "confusion_matrix.png",
                 "training_curves.png"):
        assert name in lines[-1] and (v / name).stat().st_size > 0
