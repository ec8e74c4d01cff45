from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from corolla.training.data import (
    SplitSpec,
    scan_dataset,
    split_dataset,
    split_record,
)


def test_scan_labels_and_fingerprint(photos: Path) -> None:
    ds = scan_dataset(photos)
    assert ds.classes == ("blue", "green", "red")
    assert ds.counts() == {"blue": 10, "green": 10, "red": 10}
    (photos / "red" / "notes.txt").write_text("not an image")
    (photos / "red" / ".hidden.jpg").write_bytes(b"x")
    assert scan_dataset(photos).fingerprint == ds.fingerprint


def test_split_is_deterministic_stratified_and_name_independent(photos: Path) -> None:
    spec = SplitSpec(fractions=(0.6, 0.2, 0.2), seed=3)
    a = split_dataset(scan_dataset(photos).samples, spec)
    b = split_dataset(scan_dataset(photos).samples, spec)
    assert {k: [s.sha256 for s in v] for k, v in a.items()} == {
        k: [s.sha256 for s in v] for k, v in b.items()
    }
    for part, n in (("train", 6), ("validation", 2), ("test", 2)):
        for label in range(3):
            assert sum(s.label == label for s in a[part]) == n
    # renaming files does not move photos between splits
    for p in sorted((photos / "blue").iterdir()):
        p.rename(p.with_name("renamed_" + p.name))
    c = split_dataset(scan_dataset(photos).samples, spec)
    assert {k: sorted(s.sha256 for s in v) for k, v in a.items()} == {
        k: sorted(s.sha256 for s in v) for k, v in c.items()
    }
    other = split_dataset(scan_dataset(photos).samples, SplitSpec(fractions=(0.6, 0.2, 0.2)))
    assert {s.sha256 for s in other["test"]} != {s.sha256 for s in a["test"]}


def test_duplicates_never_leak_and_conflicts_are_dropped(photos: Path) -> None:
    # copies of one photo under other names, and one photo filed under two classes
    for i in range(5):
        shutil.copy(photos / "green" / f"green_{i:03d}.jpg", photos / "green" / f"copy_{i}.jpg")
    shutil.copy(photos / "red" / "red_000.jpg", photos / "blue" / "red_000.jpg")
    ds = scan_dataset(photos)
    assert len(ds.duplicates) == 5
    assert ds.conflicts == [["blue/red_000.jpg", "red/red_000.jpg"]]
    assert ds.counts() == {"blue": 10, "green": 10, "red": 9}
    hashes = [s.sha256 for s in ds.samples]
    assert len(hashes) == len(set(hashes))
    splits = split_dataset(ds.samples, SplitSpec(fractions=(0.5, 0.25, 0.25)))
    seen = [s.sha256 for part in splits.values() for s in part]
    assert len(seen) == len(set(seen)) == len(ds.samples)
    rec = split_record(ds, splits, SplitSpec(fractions=(0.5, 0.25, 0.25)))
    assert rec["counts"] == {k: len(v) for k, v in splits.items()}
    assert rec["dropped_label_conflicts"] == ds.conflicts


def test_split_spec_validation() -> None:
    with pytest.raises(ValueError):
        SplitSpec(fractions=(0.5, 0.5, 0.5))
