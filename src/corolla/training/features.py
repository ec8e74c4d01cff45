"""Frozen-trunk feature caching: the CPU recipe's way to make pretrained fine-tuning cheap.

Owns running the frozen lower part of a network (exported to ONNX and run with ONNX Runtime,
which is faster than eager PyTorch on CPU) over every image once, or several times for
augmented training views, and saving the activations so that the trained top part never
decodes or recomputes them. Images are decoded and augmented in a small thread pool (Pillow
releases the GIL) while the trunk runs; each image's augmentation RNG is seeded from
(seed, content hash), so caches are reproducible regardless of thread scheduling. Images that
fail to decode are reported in ``FeatureCache.failures`` and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corolla.images import normalize, resize_to_spec
from corolla.model_dir import ImagePreprocessing
from corolla.training.data import DecodeFailure, Sample, augment, load_image

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class FeatureCache:
    features: np.ndarray  # float16 [views, ...]
    labels: np.ndarray  # int64 [views]
    sample_index: np.ndarray  # int64 [views]: which input sample each row came from
    failures: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            features=self.features,
            labels=self.labels,
            sample_index=self.sample_index,
            failures=np.array(self.failures, dtype=str),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureCache:
        with np.load(path) as z:
            return cls(
                features=z["features"],
                labels=z["labels"],
                sample_index=z["sample_index"],
                failures=[str(x) for x in z["failures"]],
            )


def _views(
    index: int, sample: Sample, spec: ImagePreprocessing, clean: bool, augmented: int, seed: int
) -> tuple[int, list[np.ndarray], str | None]:
    try:
        im = load_image(sample.path)
    except DecodeFailure as exc:
        return index, [], str(exc)
    out = [resize_to_spec(im, spec)] if clean else []
    rng = np.random.default_rng([seed, int(sample.sha256[:15], 16)])
    out += [augment(im, (spec.width, spec.height), rng) for _ in range(augmented)]
    return index, out, None


def iter_views(
    samples: Sequence[Sample],
    spec: ImagePreprocessing,
    *,
    clean: bool = True,
    augmented: int = 0,
    seed: int = 0,
    threads: int = 2,
) -> Iterator[tuple[int, list[np.ndarray], str | None]]:
    """(sample index, uint8 HWC views, error) per sample, in order, decoded ahead in threads."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = []
        for i, s in enumerate(samples):
            pending.append(pool.submit(_views, i, s, spec, clean, augmented, seed))
            if len(pending) >= 4 * threads:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def cache_features(
    trunk: object,
    samples: Sequence[Sample],
    spec: ImagePreprocessing,
    *,
    augmented: int = 0,
    clean: bool = True,
    seed: int = 0,
    batch_size: int = 32,
    desc: str = "features",
    progress: bool = True,
) -> FeatureCache:
    """Run ``trunk`` (an onnxruntime.InferenceSession over NHWC normalised input) on views."""
    from tqdm import tqdm

    input_name = trunk.get_inputs()[0].name  # type: ignore[attr-defined]
    feats: list[np.ndarray] = []
    labels: list[int] = []
    index: list[int] = []
    failures: list[str] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            x = normalize(np.stack(batch), spec)
            feats.append(trunk.run(None, {input_name: x})[0].astype(np.float16))  # type: ignore[attr-defined]
            batch.clear()

    bar = tqdm(total=len(samples), desc=desc, unit="img", disable=not progress, leave=False)
    if not progress:  # without bars, a plain line says what the next minutes are spent on
        log.info("%s: %d photos, %d view(s) each", desc, len(samples), int(clean) + augmented)
    for i, views, error in iter_views(samples, spec, clean=clean, augmented=augmented, seed=seed):
        bar.update(1)
        if error is not None:
            log.warning("skipped an image that failed to decode: %s", error)
            failures.append(error)
            continue
        for v in views:
            batch.append(v)
            labels.append(samples[i].label)
            index.append(i)
            if len(batch) >= batch_size:
                flush()
    flush()
    bar.close()
    shape = (0,) if not feats else feats[0].shape[1:]
    return FeatureCache(
        features=np.concatenate(feats) if feats else np.zeros((0, *shape), np.float16),
        labels=np.asarray(labels, np.int64),
        sample_index=np.asarray(index, np.int64),
        failures=failures,
    )
