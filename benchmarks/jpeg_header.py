#!/usr/bin/env python3
"""The JPEG header read without Pillow against Pillow's, in the same process, alternating.

    python3 benchmarks/jpeg_header.py [--size 180] [--rounds 5] [--photos DIR] [--n 300]

``corolla.images.decode`` reads a plain JPEG's size and EXIF orientation with libjpeg-turbo's
header parser and a few lines of Python (``read_jpeg_header``) instead of opening it with Pillow;
anything unusual still goes through Pillow. This times ``preprocess_image`` (decode, resize,
normalise: the server's and the limit's whole image path) on real photos both ways: as it runs,
and with ``read_jpeg_header`` switched off, so every photo takes Pillow's header parse as before;
each photo both ways in a row, the order alternating. Also checks that both ways give
bit-identical model inputs. Prints one line per round and the mean CPU ms per photo of each
way.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _pillow_header(data: bytes) -> tuple[int, int, int]:
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(data))
    return im.size[0], im.size[1], int(im.getexif().get(0x0112, 1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path,
                    default=HERE.parent.parent / "shared" / "datasets" / "flower_photos")
    ap.add_argument("--n", type=int, default=300, help="photos (a seeded sample)")
    ap.add_argument("--size", type=int, default=180, help="model input side (squash)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from corolla import images
    from corolla.model_dir import ImagePreprocessing

    files = sorted(args.photos.glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no photos under {args.photos}")
    files = random.Random(0).sample(files, min(args.n, len(files)))
    photos = [f.read_bytes() for f in files]
    spec = ImagePreprocessing(input="images", height=args.size, width=args.size,
                              resize="squash", scale=1 / 255.0)
    fast_header = images.read_jpeg_header

    def one(data: bytes, with_header: bool) -> tuple[float, np.ndarray]:
        images.read_jpeg_header = fast_header if with_header else (lambda _: None)
        try:
            t0 = time.process_time()
            out = images.preprocess_image(data, spec)
            return time.process_time() - t0, out
        finally:
            images.read_jpeg_header = fast_header

    same = all(np.array_equal(one(p, True)[1], one(p, False)[1]) for p in photos)
    read = [(fast_header(p), p) for p in photos]
    agree = sum(1 for h, p in read if h is not None and h == _pillow_header(p))
    taken = sum(1 for h, _ in read if h is not None)
    print(f"{len(photos)} photos, {args.size}x{args.size} squash; bit-identical inputs: {same}; "
          f"read without Pillow: {taken}, the same size and orientation as Pillow's: {agree}")
    # Each photo both ways in a row, the order alternating: a second decode of the same bytes
    # runs on warmer caches, so whole passes one way then the other would favour the second.
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rounds):
        spent = {True: 0.0, False: 0.0}
        for i, data in enumerate(photos):
            for with_header in ((True, False) if (i + r) % 2 == 0 else (False, True)):
                spent[with_header] += one(data, with_header)[0]
        for k in spent:
            times[k].append(1000 * spent[k] / len(photos))
        print(f"round {r}: without Pillow {times[True][-1]:.3f} ms/photo, "
              f"Pillow's header {times[False][-1]:.3f}")
    new, old = statistics.fmean(times[True]), statistics.fmean(times[False])
    print(f"mean CPU ms per photo: without Pillow {new:.3f}, Pillow's header {old:.3f} "
          f"({100 * (old - new) / old:.1f}% less)")
    return 0 if same and agree == taken else 1


if __name__ == "__main__":
    sys.exit(main())
