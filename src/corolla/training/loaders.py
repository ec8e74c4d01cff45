"""On-the-fly image batches for the recipes that train on pixels (full fine-tune, small CNN).

Owns a torch ``Dataset`` that decodes (through :mod:`corolla.images`), optionally keeps a
downscaled copy in memory so later epochs skip JPEG decoding, augments (random resized crop,
flip, colour jitter) or resizes per the model's preprocessing spec, normalises, and returns
NCHW float tensors. Failed decodes are reported once and skipped. Each item's augmentation RNG
is seeded from (seed, epoch, content hash), so runs repeat exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from corolla.images import normalize, resize_to_spec
from corolla.model_dir import ImagePreprocessing
from corolla.training.data import DecodeFailure, Sample, augment, load_image

log = logging.getLogger(__name__)


class ImageDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    def __init__(
        self,
        samples: Sequence[Sample],
        spec: ImagePreprocessing,
        *,
        train: bool,
        seed: int = 0,
        keep_in_memory: bool = False,
        memory_side: int = 0,
    ) -> None:
        self.spec, self.train, self.seed, self.epoch = spec, train, seed, 0
        self.keep = keep_in_memory
        # A cached copy whose shorter side is memory_side (>= the model's input) speeds up
        # later epochs; 0 keeps full resolution.
        self.memory_side = memory_side
        self.cache: dict[int, Image.Image] = {}
        self.failures: list[str] = []
        self.samples = list(samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, i: int) -> Image.Image:
        if i in self.cache:
            return self.cache[i]
        im = load_image(self.samples[i].path)
        if self.memory_side and min(im.size) > self.memory_side:
            s = self.memory_side / min(im.size)
            im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BILINEAR)
        if self.keep:
            self.cache[i] = im
        return im

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        im = self._image(i)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, int(sample.sha256[:15], 16)])
            pixels = augment(im, (self.spec.width, self.spec.height), rng)
        else:
            pixels = resize_to_spec(im, self.spec)
        x = normalize(pixels, self.spec)  # HWC float32
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), sample.label


def drop_undecodable(samples: Sequence[Sample]) -> tuple[list[Sample], list[str]]:
    """Decode every sample once; return the decodable ones and the failures (reported)."""
    good, failures = [], []
    for s in samples:
        try:
            load_image(s.path)
        except DecodeFailure as exc:
            log.warning("skipped an image that failed to decode: %s", exc)
            failures.append(str(exc))
        else:
            good.append(s)
    return good, failures


def loader(
    ds: ImageDataset, batch_size: int, *, shuffle: bool, seed: int = 0, workers: int = 0
) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=False,
    )
