"""Training recipes: how each architecture is fitted, given the split samples.

- ``cached`` (EfficientNet-Lite0, the CPU default): run the frozen lower blocks once over each
  image (a clean view plus ``views`` augmented ones) with ONNX Runtime and cache the
  activations; then fine-tune the top blocks, the head convolution and a new classifier on the
  cache (BatchNorm statistics frozen), sampling one view per image per epoch.
- ``full`` (EfficientNet-Lite0, for a GPU): fine-tune the whole network on augmented pixels.
- ``scratch`` (small CNN): the TensorFlow tutorial's from-scratch baseline, Adam 1e-3, batch 32.

Each returns a :class:`Trained`: the model (NCHW normalised input -> logits), the
preprocessing it expects, the per-epoch history and a JSON-ready recipe description.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from corolla.model_dir import ImagePreprocessing
from corolla.training.data import Sample
from corolla.training.features import FeatureCache, cache_features
from corolla.training.loaders import ImageDataset, drop_undecodable, loader
from corolla.training.models import EfficientNetLite0, build_model
from corolla.training.train import EpochRecord, FitConfig, fit, seed_everything

log = logging.getLogger(__name__)

LITE0_SPEC = ImagePreprocessing(
    input="images", height=224, width=224, resize="squash", mean=(127.0,) * 3, std=(128.0,) * 3
)
SMALL_CNN_SPEC = ImagePreprocessing(
    input="images", height=150, width=150, resize="squash", scale=1 / 255
)


@dataclass(frozen=True, kw_only=True)
class RecipeConfig:
    arch: str = "efficientnet_lite0"
    recipe: str = "cached"  # cached | full | scratch
    fit: FitConfig = field(default_factory=FitConfig)
    batch_size: int = 64
    backbone_lr_scale: float = 0.3  # lr of pretrained layers relative to the new classifier
    dropout: float = 0.3
    train_from_block: int = 12  # cached: blocks before this one are frozen and cached
    views: int = 6  # cached: augmented views per training image (plus one clean view)
    epoch_views: str = "all"  # cached: an epoch visits "all" cached views, or "one" per image
    workers: int = 0
    threads: int = 2
    # Train on train + validation for the fixed epochs, keeping the last epoch (no early
    # stopping): for a recipe already chosen on the validation split.
    refit: bool = False


@dataclass(kw_only=True)
class Trained:
    model: nn.Module
    spec: ImagePreprocessing
    history: list[EpochRecord]
    recipe: dict[str, Any]
    skipped_images: list[str]


def _batches(
    x: torch.Tensor, y: torch.Tensor, size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for i in range(0, len(x), size):
        yield x[i : i + size], y[i : i + size]


class _Top(nn.Module):
    """The trainable part of the cached recipe: cached activations -> logits."""

    def __init__(self, net: EfficientNetLite0, start: int) -> None:
        super().__init__()
        self.net, self.start = net, start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_from(x.float(), self.start)


class _Trunk(nn.Module):
    def __init__(self, net: EfficientNetLite0, stop: int) -> None:
        super().__init__()
        self.net, self.stop = net, stop

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.trunk_until(images.permute(0, 3, 1, 2), self.stop)


def train_cached(
    splits: dict[str, list[Sample]],
    num_classes: int,
    cfg: RecipeConfig,
    workdir: Path,
    resume: bool,
) -> Trained:
    from corolla.training.export import export_onnx, ort_session

    spec, seed, start = LITE0_SPEC, cfg.fit.seed, cfg.train_from_block
    net = build_model("efficientnet_lite0", 1000, pretrained=True)
    assert isinstance(net, EfficientNetLite0)
    net.reset_classifier(num_classes)
    net._dropout.p = cfg.dropout
    net.eval()
    key_src = {
        "samples": {k: [s.sha256 for s in v] for k, v in splits.items()},
        "start": start,
        "views": cfg.views,
        "seed": seed,
        "spec": spec.to_json(),
    }
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    workdir.mkdir(parents=True, exist_ok=True)
    trunk_path = workdir / f"trunk-{start}.onnx"
    export_onnx(_Trunk(net, start), trunk_path, spec, output_name="features")
    trunk = ort_session(trunk_path, threads=cfg.threads)
    caches: dict[str, FeatureCache] = {}
    for name in ("train", "validation"):
        path = workdir / f"features-{key}-{name}.npz"
        if resume and path.exists():
            caches[name] = FeatureCache.load(path)
            log.info("loaded cached %s features from %s", name, path)
            continue
        views = cfg.views if name == "train" else 0
        caches[name] = cache_features(
            trunk,
            splits[name],
            spec,
            augmented=views,
            seed=seed,
            desc=f"{name} features",
            progress=cfg.fit.progress,
        )
        caches[name].save(path)
    tr, va = caches["train"], caches["validation"]
    x_tr, y_tr = torch.from_numpy(tr.features), torch.from_numpy(tr.labels)
    images = np.unique(tr.sample_index)
    starts = np.searchsorted(tr.sample_index, images)
    counts = np.diff(np.append(starts, len(tr.sample_index)))

    def train_batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([seed, epoch])
        if cfg.epoch_views == "all":
            pick = rng.permutation(len(x_tr))
        else:  # one random view of each image
            pick = rng.permutation(starts + (rng.random(len(starts)) * counts).astype(np.int64))
        for i in range(0, len(pick), cfg.batch_size):
            j = torch.from_numpy(pick[i : i + cfg.batch_size])
            yield x_tr[j], y_tr[j]

    x_va, y_va = torch.from_numpy(va.features), torch.from_numpy(va.labels)
    top = _Top(net, start)
    pretrained = [p for b in net._blocks[start:] for p in b.parameters()]
    pretrained += [*net._conv_head.parameters(), *net._bn1.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    for p in [*pretrained, *net._fc.parameters()]:
        p.requires_grad_(True)
    groups = [
        {"params": pretrained, "lr": cfg.fit.lr * cfg.backbone_lr_scale},
        {"params": list(net._fc.parameters()), "lr": cfg.fit.lr},
    ]

    def train_mode() -> None:  # BatchNorm keeps its ImageNet statistics; dropout is on
        top.eval()
        net._dropout.train()

    per_epoch = len(x_tr) if cfg.epoch_views == "all" else len(starts)
    steps = (per_epoch + cfg.batch_size - 1) // cfg.batch_size
    history = fit(
        top,
        groups,
        train_batches,
        steps,
        lambda: _batches(x_va, y_va, 256),
        cfg.fit,
        checkpoint=workdir / f"checkpoint-{key}.pt",
        resume=resume,
        train_mode=train_mode,
    )
    recipe = {
        "name": "cached",
        **_describe(cfg),
        "cache_key": key,
        "frozen": f"stem + blocks 0-{start - 1} (ImageNet BatchNorm statistics kept)",
    }
    return Trained(
        model=net.eval(),
        spec=spec,
        history=history,
        recipe=recipe,
        skipped_images=tr.failures + va.failures,
    )


def train_pixels(
    splits: dict[str, list[Sample]],
    num_classes: int,
    cfg: RecipeConfig,
    workdir: Path,
    resume: bool,
) -> Trained:
    """The ``full`` (EfficientNet-Lite0, all layers) and ``scratch`` (small CNN) recipes."""
    pretrained = cfg.arch == "efficientnet_lite0"
    spec = LITE0_SPEC if pretrained else SMALL_CNN_SPEC
    net = build_model(cfg.arch, 1000 if pretrained else num_classes, pretrained=pretrained)
    if isinstance(net, EfficientNetLite0):
        net.reset_classifier(num_classes)
        net._dropout.p = cfg.dropout
        head = list(net._fc.parameters())
        body = [p for n, p in net.named_parameters() if not n.startswith("_fc.")]
        groups = [
            {"params": body, "lr": cfg.fit.lr * cfg.backbone_lr_scale},
            {"params": head, "lr": cfg.fit.lr},
        ]
    else:
        groups = [{"params": list(net.parameters()), "lr": cfg.fit.lr}]
    train, f1 = drop_undecodable(splits["train"])
    val, f2 = drop_undecodable(splits["validation"])
    side = round(max(spec.height, spec.width) * 1.15)
    tr_ds = ImageDataset(
        train, spec, train=True, seed=cfg.fit.seed, keep_in_memory=True, memory_side=side
    )
    va_ds = ImageDataset(val, spec, train=False, keep_in_memory=True)
    tr_dl = loader(tr_ds, cfg.batch_size, shuffle=True, seed=cfg.fit.seed, workers=cfg.workers)
    va_dl = loader(va_ds, 128, shuffle=False, workers=cfg.workers)

    def train_batches(epoch: int) -> Any:
        tr_ds.set_epoch(epoch)
        tr_dl.generator.manual_seed(cfg.fit.seed + epoch)
        return tr_dl

    workdir.mkdir(parents=True, exist_ok=True)
    ck = workdir / f"checkpoint-{cfg.arch}-{cfg.recipe}.pt"
    history = fit(
        net, groups, train_batches, len(tr_dl), lambda: va_dl, cfg.fit, checkpoint=ck, resume=resume
    )
    return Trained(
        model=net.eval(),
        spec=spec,
        history=history,
        recipe={"name": cfg.recipe, **_describe(cfg)},
        skipped_images=f1 + f2,
    )


def _describe(cfg: RecipeConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["fit"].pop("progress", None)
    return d


def run_recipe(
    splits: dict[str, list[Sample]],
    num_classes: int,
    cfg: RecipeConfig,
    workdir: Path,
    resume: bool,
) -> Trained:
    seed_everything(cfg.fit.seed)  # the new classifier's initialisation comes from this
    if cfg.recipe == "cached":
        if cfg.arch != "efficientnet_lite0":
            raise ValueError("the cached recipe needs a pretrained backbone (efficientnet_lite0)")
        return train_cached(splits, num_classes, cfg, workdir, resume)
    if cfg.recipe in ("full", "scratch"):
        return train_pixels(splits, num_classes, cfg, workdir, resume)
    raise ValueError(f"unknown recipe {cfg.recipe!r}")
