"""The training loop shared by every recipe.

Owns :func:`fit`: AdamW with a warmup + cosine (or constant) learning-rate schedule, label
smoothing, per-epoch validation with early stopping on validation accuracy (patience,
restore-best), a checkpoint after every epoch that :func:`fit` resumes from, tqdm progress with
live loss/accuracy, and the per-epoch history that becomes the training curves. What a batch is
(cached features or decoded images) is the recipe's business: it passes callables.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> batches


@dataclass(frozen=True, kw_only=True)
class FitConfig:
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine (after linear warmup) | constant
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    patience: int = 5
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


@dataclass(frozen=True, kw_only=True)
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _lr_lambda(cfg: FitConfig, steps_per_epoch: int) -> Callable[[int], float]:
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    total = max(warmup + 1, cfg.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

    return factor


@torch.no_grad()
def evaluate_batches(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: str
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode; NaN for no batches."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        n += len(y)
    if n == 0:
        return math.nan, math.nan
    return loss_sum / n, correct / n


def fit(
    model: nn.Module,
    param_groups: list[dict[str, Any]],
    train_batches: Batches,
    steps_per_epoch: int,
    val_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    cfg: FitConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    train_mode: Callable[[], None] | None = None,
) -> list[EpochRecord]:
    """Train ``model`` in place; on return it holds the best validation-accuracy weights.

    Without validation data (``val_batches`` yields nothing: a refit on train + validation)
    there is no early stopping and the model keeps the last epoch's weights.

    ``train_mode`` puts the model in training mode (default ``model.train()``; recipes with
    frozen BatchNorm override it). With ``checkpoint`` set, a checkpoint is saved after every
    epoch, and with ``resume`` an existing one is loaded first and training continues from it.
    """
    from tqdm import tqdm

    seed_everything(cfg.seed)
    model.to(cfg.device)
    opt = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history: list[EpochRecord] = []
    best: dict[str, Any] = {"acc": -1.0, "loss": math.inf, "state": None, "epoch": 0}
    bad_epochs, start = 0, 0
    if resume and checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, map_location=cfg.device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history = [EpochRecord(**h) for h in ck["history"]]
        best, bad_epochs, start = ck["best"], ck["bad_epochs"], ck["epoch"] + 1
        torch.set_rng_state(ck["torch_rng"])
        log.info("resumed from %s at epoch %d", checkpoint, start + 1)
    for epoch in range(start, cfg.epochs):
        if bad_epochs > cfg.patience:
            break
        t0 = time.perf_counter()
        (train_mode or model.train)()
        loss_sum, correct, n = 0.0, 0, 0
        bar = tqdm(
            train_batches(epoch),
            total=steps_per_epoch,
            disable=not cfg.progress,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
        )
        for x, y in bar:
            x, y = x.to(cfg.device), y.to(cfg.device)
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            n += len(y)
            bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{correct / n:.4f}")
        val_loss, val_acc = evaluate_batches(model, val_batches(), cfg.device)
        rec = EpochRecord(
            epoch=epoch + 1,
            train_loss=loss_sum / max(n, 1),
            train_acc=correct / max(n, 1),
            val_loss=val_loss,
            val_acc=val_acc,
            lr=opt.param_groups[0]["lr"],
            seconds=time.perf_counter() - t0,
        )
        history.append(rec)
        # No validation (a refit): no early stopping, nothing to restore; the model keeps the
        # last epoch's weights.
        validated = not math.isnan(val_acc)
        improved = validated and (
            val_acc > best["acc"] or (val_acc == best["acc"] and val_loss < best["loss"])
        )
        if improved:
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best = {"acc": val_acc, "loss": val_loss, "state": state, "epoch": epoch + 1}
            bad_epochs = 0
        elif validated:
            bad_epochs += 1
        line = (f"epoch {rec.epoch}: loss {rec.train_loss:.4f} acc {rec.train_acc:.4f} | "
                f"val loss {val_loss:.4f} acc {val_acc:.4f} ({rec.seconds:.1f}s)"
                + (" *" if improved else ""))
        if cfg.progress:
            tqdm.write(line)  # above the progress bars; a log record too would repeat it
        else:
            log.info("%s", line)
        if checkpoint is not None:
            _save_checkpoint(
                checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "history": [asdict(h) for h in history],
                    "best": best,
                    "bad_epochs": bad_epochs,
                    "epoch": epoch,
                    "torch_rng": torch.get_rng_state(),
                },
            )
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return history


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # an interrupted save never leaves a torn checkpoint


def best_epoch(history: list[EpochRecord]) -> EpochRecord | None:
    return max(history, key=lambda h: (h.val_acc, -h.val_loss), default=None)
