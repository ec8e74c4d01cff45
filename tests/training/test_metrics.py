from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from corolla.training.metrics import (
    classification_metrics,
    confusion_matrix,
    format_report,
    plot_confusion_matrix,
    plot_curves,
    top_k_accuracy,
)


def _onehot_scores(pred: list[int], n: int) -> np.ndarray:
    s = np.full((len(pred), n), 0.1, np.float32)
    s[np.arange(len(pred)), pred] = 0.9
    return s


def test_known_answers() -> None:
    # true: a a a b b c ; pred: a a b b c c
    y_true = np.array([0, 0, 0, 1, 1, 2])
    scores = _onehot_scores([0, 0, 1, 1, 2, 2], 3)
    m = classification_metrics(y_true, scores, ["a", "b", "c"], ks=(1, 2))
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (m["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"], c["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert a["f1"] == pytest.approx(0.8)
    assert m["macro_avg"]["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["macro_avg"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_avg"]["recall"] == pytest.approx(4 / 6)  # weighted recall == accuracy
    assert m["weighted_avg"]["f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    text = format_report(m)
    assert "macro avg" in text and "0.6667" in text and "top-2 accuracy" in text


def test_class_never_predicted_has_zero_precision() -> None:
    m = classification_metrics(np.array([0, 1]), _onehot_scores([0, 0], 2), ["x", "y"])
    assert m["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_top_k() -> None:
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    y = np.array([1, 2, 0])
    assert top_k_accuracy(y, scores, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(y, scores, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(y, scores, 3) == 1.0
    assert confusion_matrix(y, scores.argmax(1), 3).sum() == 3


def test_plots(tmp_path: Path) -> None:
    plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "cm.png", "t")
    hist = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_acc": 0.5 + e / 10,
            "val_acc": 0.4 + e / 10,
        }
        for e in (1, 2, 3)
    ]
    plot_curves(hist, tmp_path / "curves.png", "t")
    for name in ("cm.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
