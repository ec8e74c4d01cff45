#!/usr/bin/env python3
"""Coverage-guided fuzz target (atheris / libFuzzer) for image decoding: corolla.images'
header reads (``decode_cost``, the JPEG header parser) and ``preprocess_image`` on any bytes.

Property: every input is either a model input of the spec's shape or an INVALID_ARGUMENT; no
other exception, no hang (``-timeout``), and the process stays under ``-rss_limit_mb`` (a
decompression bomb must be refused from its header, before its pixels are allocated).

    .venv/bin/python tests/fuzz/image_target.py CORPUS_DIR -max_total_time=600 -rss_limit_mb=1024

(tests/fuzz/test_image_fuzz.py writes a seed corpus, bombs and truncated files included, and
runs a bounded run; docs/reliability.md has the sizes.)
"""

from __future__ import annotations

import sys

import atheris

# The libraries first, uninstrumented (instrumenting numpy and Pillow's Python takes minutes);
# Corolla's own decoding code is what the coverage guides.
import numpy  # noqa: F401
import simplejpeg  # noqa: F401
from PIL import Image, ImageOps  # noqa: F401

with atheris.instrument_imports(include=["corolla"]):
    from corolla import images, jpeg_header
    from corolla.errors import Code, CorollaError
    from corolla.model_dir import ImagePreprocessing

SPEC = ImagePreprocessing(input="images", height=64, width=64, channels=3, resize="center_crop",
                          crop_fraction=0.875)
LIMITS = images.ImageLimits(max_pixels=4_000_000)


def one_input(data: bytes) -> None:
    assert images.decode_cost(data) >= 0
    jpeg_header.read_jpeg_header(data)
    try:
        out = images.preprocess_image(data, SPEC, limits=LIMITS)
    except CorollaError as exc:
        if exc.code != Code.INVALID_ARGUMENT:
            raise
        return
    assert out.shape == SPEC.input_shape, out.shape


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
