"""Datasets on disk: class folders -> labelled, de-duplicated samples and a deterministic split.

Owns the flow_from_directory layout (``DATA_DIR/<class>/<image>``), content hashing (sha256 of
the file bytes), duplicate and label-conflict handling, the seeded stratified train/validation/
test split, the dataset fingerprint recorded in exported models, and image loading for training
(decode via :mod:`corolla.images`, so training and serving read pixels the same way).

Duplicates: files with identical bytes are one sample. If the copies sit in different class
folders the label is ambiguous, so the sample is dropped and reported. Splitting by content hash
means a photo can never be in two splits. No torch here.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from corolla.errors import CorollaError
from corolla.images import decode

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The photos given cannot be trained on as they are (said in the message)."""


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True, kw_only=True)
class Sample:
    path: Path
    label: int
    sha256: str


@dataclass(kw_only=True)
class Dataset:
    root: Path
    classes: tuple[str, ...]
    samples: list[Sample]
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped, kept) paths
    conflicts: list[list[str]] = field(default_factory=list)  # same bytes, several classes

    @property
    def fingerprint(self) -> str:
        """sha256 over the sorted (class, content hash) pairs: names and order do not matter."""
        lines = sorted(f"{self.classes[s.label]}\t{s.sha256}" for s in self.samples)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for s in self.samples:
            out[self.classes[s.label]] += 1
        return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scan_dataset(root: str | Path, classes: Sequence[str] | None = None) -> Dataset:
    """Read ``root/<class>/*`` (image extensions only, hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist or is not a directory")
    if classes is None:
        classes = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
    if len(classes) < 2:
        raise DatasetError(f"{root} needs at least two class folders (one per class, holding "
                           f"its photos), found {list(classes)}")
    by_hash: dict[str, list[tuple[Path, int]]] = defaultdict(list)
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if (
                path.suffix.lower() in IMAGE_EXTENSIONS
                and path.is_file()
                and not any(part.startswith(".") for part in path.relative_to(root).parts)
            ):
                by_hash[_sha256(path)].append((path, label))
    ds = Dataset(root=root, classes=tuple(classes), samples=[])
    for digest, copies in sorted(by_hash.items(), key=lambda kv: str(kv[1][0][0])):
        labels = {label for _, label in copies}
        if len(labels) > 1:
            ds.conflicts.append([str(p.relative_to(root)) for p, _ in copies])
            continue
        kept = copies[0][0]
        ds.duplicates += [
            (str(p.relative_to(root)), str(kept.relative_to(root))) for p, _ in copies[1:]
        ]
        ds.samples.append(Sample(path=kept, label=copies[0][1], sha256=digest))
    for group in ds.conflicts:
        log.warning("dropped: identical image filed under several classes: %s", ", ".join(group))
    for dropped, kept_name in ds.duplicates:
        log.info("duplicate %s of %s: kept one copy", dropped, kept_name)
    return ds


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    fractions: tuple[float, float, float] = (0.75, 0.10, 0.15)  # train, validation, test
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions):
            raise ValueError("split fractions must be three non-negative numbers")
        if abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {self.fractions}")


def split_dataset(samples: Iterable[Sample], spec: SplitSpec) -> dict[str, list[Sample]]:
    """Stratified, seeded split that depends only on (seed, content hash, label).

    Within each class, samples are ordered by sha256(seed:content-hash), then cut at the
    fractions. Renaming or reordering files does not move a photo to another split.
    """
    per_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        per_class[s.label].append(s)
    out: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for label in sorted(per_class):
        items = sorted(
            per_class[label],
            key=lambda s: hashlib.sha256(f"{spec.seed}:{s.sha256}".encode()).hexdigest(),
        )
        n = len(items)
        n_val = round(n * spec.fractions[1])
        n_test = round(n * spec.fractions[2])
        n_train = n - n_val - n_test
        out["train"] += items[:n_train]
        out["validation"] += items[n_train : n_train + n_val]
        out["test"] += items[n_train + n_val :]
    for name in SPLITS:
        out[name].sort(key=lambda s: str(s.path))
    return out


def check_trainable(ds: Dataset, splits: dict[str, list[Sample]]) -> None:
    """Refuse a dataset with a class that has no training photo (an empty class folder, say:
    the model would have an output nobody taught); warn about classes too small to appear in
    the validation or test split, whose metrics will then be missing."""
    counts = {name: 0 for name in ds.classes}
    for s in splits["train"]:
        counts[ds.classes[s.label]] += 1
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        total = ds.counts()
        raise DatasetError(
            "no training photos for class " + ", ".join(
                f"{name!r} (" + (f"{total[name]} photos, none left for training by the split)"
                                 if total.get(name) else "0 photos in its folder)")
                for name in empty)
            + f" in {ds.root}: remove empty class folders or add photos; the split must leave "
            "every class training photos")
    for split in ("validation", "test"):
        present = {s.label for s in splits[split]}
        missing = [name for i, name in enumerate(ds.classes) if i not in present]
        if splits[split] and missing:
            log.warning("too few photos to put class %s in the %s split: its %s metrics will "
                        "be missing", ", ".join(missing), split, split)


def split_record(ds: Dataset, splits: dict[str, list[Sample]], spec: SplitSpec) -> dict:
    """What goes in provenance: the rule, the counts and each split's member hashes."""
    return {
        "seed": spec.seed,
        "fractions": dict(zip(SPLITS, spec.fractions, strict=True)),
        "method": "per-class order by sha256(f'{seed}:{content_sha256}'), cut at fractions",
        "counts": {k: len(v) for k, v in splits.items()},
        "dropped_label_conflicts": ds.conflicts,
        "merged_duplicates": [list(d) for d in ds.duplicates],
        "members_sha256": {
            k: hashlib.sha256("\n".join(sorted(s.sha256 for s in v)).encode()).hexdigest()
            for k, v in splits.items()
        },
    }


class DecodeFailure(Exception):
    """An image that could not be read or decoded; callers report and skip it."""


def load_image(path: Path) -> Image.Image:
    """Full-resolution RGB decode (EXIF orientation applied) through the server's decoder."""
    try:
        return decode(path.read_bytes(), None, reference=True)
    except (CorollaError, OSError, ValueError) as exc:
        raise DecodeFailure(f"{path}: {exc}") from exc


def random_resized_crop(
    im: Image.Image,
    size: tuple[int, int],
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    """Inception-style crop: random area fraction and aspect ratio, resized bilinearly."""
    w, h = im.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        cw, ch = np.sqrt(target * aspect), np.sqrt(target / aspect)
        if cw <= w and ch <= h:
            left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            return im.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
    return im.resize(size, Image.Resampling.BILINEAR)  # fallback: the whole image


def colour_jitter(
    pixels: np.ndarray, rng: np.random.Generator, strength: float = 0.2
) -> np.ndarray:
    """Random brightness, contrast and saturation (each x U[1-s, 1+s]) on uint8 HWC pixels."""
    x = pixels.astype(np.float32)
    x *= rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - grey[..., None]) * rng.uniform(1 - strength, 1 + strength) + grey[..., None]
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def augment(im: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One training view: random resized crop, horizontal flip, colour jitter -> uint8 HWC."""
    out = random_resized_crop(im, size, rng)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return colour_jitter(np.asarray(out, dtype=np.uint8), rng)
