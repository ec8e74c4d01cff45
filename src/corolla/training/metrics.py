"""Classification metrics and their reports, from labels and scores alone (numpy, no torch).

Owns the confusion matrix, per-class precision/recall/F1/support with macro and weighted
averages (sklearn's definitions: a class with no predictions has precision 0), top-k accuracy,
the text report, and the PNG plots (confusion matrix, training curves) drawn with matplotlib's
Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[i, j] = number of samples of true class i predicted as class j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(axis=1).mean()) if len(top) else 0.0


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def classification_metrics(
    y_true: np.ndarray, scores: np.ndarray, labels: Sequence[str], ks: Sequence[int] = (1, 2, 3)
) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready numbers."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = scores.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision, recall = _safe_div(tp, predicted), _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = support.sum()
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }
    weights = support / total if total else support

    def avg(w: np.ndarray) -> dict[str, Any]:
        return {
            "precision": float((precision * w).sum()),
            "recall": float((recall * w).sum()),
            "f1": float((f1 * w).sum()),
            "support": int(total),
        }

    uniform = np.full(len(labels), 1.0 / len(labels))
    return {
        "num_examples": int(total),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "top_k_accuracy": {
            str(k): top_k_accuracy(y_true, scores, k) for k in ks if k <= len(labels)
        },
        "per_class": per_class,
        "macro_avg": avg(uniform),
        "weighted_avg": avg(weights),
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
    }


def format_report(m: dict[str, Any], digits: int = 4) -> str:
    """sklearn-style classification report text, plus top-k accuracy."""
    names = [*m["per_class"], "macro avg", "weighted avg"]
    width = max(12, *(len(n) for n in names))
    head = f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}"
    lines = [head, ""]

    def row(name: str, r: dict[str, Any]) -> str:
        return (
            f"{name:>{width}} {r['precision']:>10.{digits}f} {r['recall']:>10.{digits}f} "
            f"{r['f1']:>10.{digits}f} {r['support']:>10d}"
        )

    lines += [row(n, r) for n, r in m["per_class"].items()]
    lines += [
        "",
        f"{'accuracy':>{width}} {'':>10} {'':>10} "
        f"{m['accuracy']:>10.{digits}f} {m['num_examples']:>10d}",
    ]
    lines += [row("macro avg", m["macro_avg"]), row("weighted avg", m["weighted_avg"]), ""]
    lines += [f"top-{k} accuracy: {v:.{digits}f}" for k, v in m["top_k_accuracy"].items()]
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(cm: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1.5), dpi=100)
    rates = _safe_div(cm.astype(np.float64), cm.sum(axis=1, keepdims=True).astype(np.float64))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(history: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train vs validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key in ((a, "loss"), (b, "acc")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        val = [h[f"val_{key}"] for h in history]
        if any(v is not None for v in val):  # none after a refit on train + validation
            ax.plot(epochs, [math.nan if v is None else v for v in val], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy" if key == "acc" else "cross-entropy (train: with smoothing)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
