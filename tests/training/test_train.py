from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from corolla.training.models import (  # noqa: E402
    EfficientNetLite0,
    ServingWrapper,
    SmallCNN,
    build_model,
)
from corolla.training.train import FitConfig, fit  # noqa: E402


def _eval_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), y))


def _steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> list[float]:
    """Eval-mode loss before and after ``n`` Adam steps on one batch."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = _eval_loss(model, x, y)
    for _ in range(n):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [before, _eval_loss(model, x, y)]


def test_small_cnn_trains_a_few_steps() -> None:
    torch.manual_seed(0)
    model = SmallCNN(num_classes=3)
    x, y = torch.randn(4, 3, 150, 150), torch.tensor([0, 1, 2, 0])
    losses = _steps(model, x, y, 5)
    assert losses[-1] < losses[0]
    assert model.eval()(x).shape == (4, 3)


def test_efficientnet_lite0_loads_imagenet_weights_and_trains() -> None:
    model = build_model("efficientnet_lite0", 1000)
    assert isinstance(model, EfficientNetLite0)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.01)
    model.reset_classifier(3)
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 224, 224), torch.tensor([0, 2])
    losses = _steps(model, x, y, 3)
    assert losses[-1] < losses[0]
    probs = ServingWrapper(model).eval()(torch.randn(2, 224, 224, 3))
    assert probs.shape == (2, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(2))


def test_partial_forward_equals_full_forward() -> None:
    model = build_model("efficientnet_lite0", 5, pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        full = model(x)
        mid = model.trunk_until(x, 14)
        assert mid.shape == (1, 192, 7, 7)
        assert torch.allclose(model.forward_from(mid, 14), full, atol=1e-5)


def _toy(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(seed)
    return (
        torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)),
        x,
        y,
    )


def _run(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: FitConfig,
    ck: Path | None,
    resume: bool = False,
):
    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(x), 16):
            j = perm[i : i + 16]
            yield x[j], y[j]

    groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    return fit(model, groups, batches, 4, lambda: [(x, y)], cfg, checkpoint=ck, resume=resume)


class _Crash(Exception):
    pass


def test_checkpoint_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = FitConfig(epochs=6, lr=1e-2, patience=100, progress=False)
    model_a, x, y = _toy()
    full = _run(model_a, x, y, cfg, tmp_path / "a.pt")

    # the same run, killed during epoch 4 (after the checkpoint of epoch 3)
    model_b, _, _ = _toy()

    def crashing(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if epoch == 3:
            raise _Crash
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(x), 16):
            yield x[perm[i : i + 16]], y[perm[i : i + 16]]

    groups = [{"params": list(model_b.parameters()), "lr": cfg.lr}]
    with pytest.raises(_Crash):
        fit(model_b, groups, crashing, 4, lambda: [(x, y)], cfg, checkpoint=tmp_path / "b.pt")
    assert torch.load(tmp_path / "b.pt", weights_only=False)["epoch"] == 2  # 0-based

    # a fresh process with a different initialisation resumes from the checkpoint
    model_c, _, _ = _toy(seed=1)
    resumed = _run(model_c, x, y, cfg, tmp_path / "b.pt", resume=True)
    assert [h.epoch for h in resumed] == [1, 2, 3, 4, 5, 6]
    for a, c in zip(full, resumed, strict=True):
        assert a.train_loss == pytest.approx(c.train_loss, rel=1e-5)
        assert a.val_acc == c.val_acc
    for pa, pc in zip(model_a.parameters(), model_c.parameters(), strict=True):
        assert torch.allclose(pa, pc, atol=1e-6)


def test_early_stopping_with_patience_restores_the_best_epoch() -> None:
    model, x, y = _toy()
    planned = iter([5, 9, 6, 6, 6, 6, 6, 6])  # correct answers out of 10, per epoch
    states: list[dict[str, torch.Tensor]] = []

    def val() -> list[tuple[torch.Tensor, torch.Tensor]]:
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        with torch.no_grad():
            pred = model(x[:10]).argmax(-1)
        right = torch.arange(10) < next(planned)
        return [(x[:10], torch.where(right, pred, 1 - pred))]

    groups = [{"params": list(model.parameters()), "lr": 1e-2}]
    cfg = FitConfig(epochs=8, lr=1e-2, patience=2, progress=False)
    hist = fit(model, groups, lambda e: [(x, y)], 1, val, cfg)
    assert [h.val_acc for h in hist] == [0.5, 0.9, 0.6, 0.6, 0.6]  # stops after 3 bad epochs
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[1][k])
