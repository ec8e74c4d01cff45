"""Test-time variants of a trained EfficientNet-Lite0: input size, centre crop, flip averaging.

    .venv/bin/python benchmarks/eval_test_time.py runs/work-default/checkpoint-<key>.pt \\
        --split validation --sizes 224,240,256,272 --modes squash,0.875

Loads a training checkpoint written by ``corolla train`` (its best epoch's weights), the split
of a published version (``split.json``) and the photos, then reports top-1 accuracy for each
input size and resize mode, with and without averaging the prediction over a horizontal flip.
The network is fully convolutional up to its global pooling, so it accepts any even size; the
normalisation is the model's own ``(x - 127) / 128``. A size or mode is worth adopting only if
it wins on validation and then holds on test (see docs/training.md, "What was tried").
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from corolla.training.models import EfficientNetLite0

REPO = Path(__file__).resolve().parent.parent


def load_pixels(path: Path, size: int, mode: str) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    if mode == "squash":
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    else:  # a centre crop of this fraction of the shorter side
        frac = float(mode)
        w, h = im.size
        side = min(w, h) * frac
        left, top = (w - side) / 2, (h - side) / 2
        im = im.resize((size, size), Image.Resampling.BILINEAR,
                       box=(left, top, left + side, top + side))
    return (np.asarray(im, np.float32) - 127.0) / 128.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--version", type=Path,
                   default=REPO / "src/corolla/default_model/flowers/1",
                   help="published version whose split.json and labels are used")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/flower_photos")
    p.add_argument("--split", default="validation", choices=["validation", "test"])
    p.add_argument("--sizes", default="224,256")
    p.add_argument("--modes", default="squash")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    ckpt = torch.load(args.checkpoint, weights_only=False, map_location="cpu")
    state = ckpt["best"]["state"] if ckpt.get("best") else ckpt["model"]
    labels = json.loads((args.version / "corolla.json").read_text())["labels"]
    model = EfficientNetLite0(num_classes=len(labels))
    model.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    model.eval()
    items = json.loads((args.version / "split.json").read_text())[args.split]
    truth = np.array([labels.index(Path(it["path"]).parts[0]) for it in items])
    print(f"{args.split}: {len(items)} photos, checkpoint best epoch "
          f"{ckpt.get('best', {}).get('epoch')}")
    for mode in args.modes.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                x = np.stack(list(pool.map(
                    lambda it, s=size, m=mode: load_pixels(args.data / it["path"], s, m),
                    items)))
            plain, flipped = [], []
            with torch.no_grad():
                for i in range(0, len(x), 32):
                    xb = torch.from_numpy(x[i:i + 32]).permute(0, 3, 1, 2)
                    plain.append(torch.softmax(model(xb), -1).numpy())
                    flipped.append(torch.softmax(model(torch.flip(xb, dims=[3])), -1).numpy())
            p1 = np.concatenate(plain)
            p2 = (p1 + np.concatenate(flipped)) / 2
            err1 = int((p1.argmax(1) != truth).sum())
            err2 = int((p2.argmax(1) != truth).sum())
            print(f"{args.split} {mode:>6} {size}: top-1 {1 - err1 / len(items):.4f} "
                  f"({err1} errors); with flip averaging {1 - err2 / len(items):.4f} "
                  f"({err2} errors)  [{time.perf_counter() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
