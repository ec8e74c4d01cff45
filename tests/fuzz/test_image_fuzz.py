"""Image decoding against bombs, truncated and damaged files (issue 22, Tests).

- Decompression bombs of every format (headers that claim billions of pixels, and real
  highly-compressible images over the limit) are refused from the header: INVALID_ARGUMENT,
  and the decode allocates nothing near their size (resident memory, in a subprocess).
- Truncated and bit-flipped images (hypothesis): a model input or INVALID_ARGUMENT, nothing else.
- A bounded coverage-guided run of tests/fuzz/image_target.py (atheris / libFuzzer) from a seed
  corpus of all of the above, with libFuzzer's RSS limit: no crash, no hang, no blow-up.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from strategies import bomb, image_bytes

from corolla import images
from corolla.errors import Code, CorollaError
from corolla.model_dir import ImagePreprocessing

SPEC = ImagePreprocessing(input="images", height=64, width=64, channels=3)
LIMITS = images.ImageLimits(max_pixels=4_000_000)
TARGET = Path(__file__).with_name("image_target.py")
FUZZ_SECONDS = int(os.environ.get("COROLLA_IMAGE_FUZZ_SECONDS", "20"))


def _decode(data: bytes) -> str:
    try:
        out = images.preprocess_image(data, SPEC, limits=LIMITS)
    except CorollaError as exc:
        assert exc.code == Code.INVALID_ARGUMENT, exc
        return "refused"
    assert out.shape == SPEC.input_shape
    return "ok"


def _small(fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (10, 200, 30)).save(buf, fmt, **kw)
    return buf.getvalue()


@functools.cache
def bombs() -> dict[str, bytes]:
    """Bytes that claim far more pixels than they carry, one or more per format."""
    out = {f"{fmt} header 65535x65535": bomb(fmt, 65535, 65535, _small(fmt))
           for fmt in ("PNG", "GIF", "BMP", "JPEG")}
    out["JPEG progressive header"] = bomb("JPEG", 65535, 65535, _small("JPEG", progressive=True))
    webp = _small("WEBP", lossless=True)  # VP8L: 14-bit sizes
    bits = (16383) | (16383 << 14)
    out["WEBP header 16384x16384"] = webp[:21] + bits.to_bytes(4, "little") + webp[25:]
    # Real, complete images over the limit that compress to almost nothing.
    big = Image.new("L", (5000, 5000))
    for fmt in ("PNG", "GIF", "TIFF"):
        buf = io.BytesIO()
        big.save(buf, fmt, **({"compression": "tiff_deflate"} if fmt == "TIFF" else {}))
        out[f"{fmt} 25 megapixels of zeros"] = buf.getvalue()
    # A PNG whose IDAT inflates to 64 MB behind a 1000x1000 header (a zip bomb).
    out["PNG 64 MB IDAT"] = bomb("PNG", 1000, 1000, b"")[:33] + _idat(zlib.compress(
        b"\x00" * (64 << 20), 9))
    return out


def _idat(data: bytes) -> bytes:
    import struct

    chunk = b"IDAT" + data
    return struct.pack(">I", len(data)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize("name", sorted(bombs()))
def test_bombs_are_refused_or_bounded(name: str, tmp_path: Path) -> None:
    """In a subprocess: the decode's peak resident memory stays far below the bomb's size."""
    path = tmp_path / "bomb"
    path.write_bytes(bombs()[name])
    code = (
        "import resource, sys\n"
        "from corolla import images\n"
        "from corolla.errors import CorollaError\n"
        "from corolla.model_dir import ImagePreprocessing\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "spec = ImagePreprocessing(input='images', height=64, width=64)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    images.preprocess_image(data, spec, limits=images.ImageLimits(max_pixels=4_000_000))\n"
        "    print('ok', end=' ')\n"
        "except CorollaError as exc:\n"
        "    print(exc.code.name, end=' ')\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    outcome, grew_mib = out[0], int(out[1])
    assert outcome in ("INVALID_ARGUMENT", "ok"), out
    # 4 megapixels decode to at most ~70 MB (WebP, 17 bytes per pixel); a bomb claims GBs.
    assert grew_mib < 128, (name, outcome, grew_mib)


@given(data=image_bytes())
def test_damaged_images(data: bytes) -> None:
    assert images.decode_cost(data) >= 0
    _decode(data)


@given(data=st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    assert images.decode_cost(data) >= 0
    _decode(data)


def seed_corpus(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    seeds = dict(bombs())
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"):
        seeds[f"small {fmt}"] = _small(fmt)
    seeds["progressive"] = _small("JPEG", progressive=True)
    buf = io.BytesIO()
    Image.new("CMYK", (20, 20)).save(buf, "JPEG")
    seeds["cmyk"] = buf.getvalue()
    for name, data in list(seeds.items()):
        if len(data) > 200_000:
            del seeds[name]  # libFuzzer's -max_len keeps inputs small; the bombs above are
            continue  # tested whole by test_bombs_are_refused_or_bounded
        seeds[f"{name} truncated"] = data[: len(data) // 2]
    for i, data in enumerate(seeds.values()):
        (path / f"seed-{i:03d}").write_bytes(data)
    return len(seeds)


@pytest.mark.skipif(FUZZ_SECONDS <= 0, reason="COROLLA_IMAGE_FUZZ_SECONDS=0")
def test_coverage_guided_image_fuzz(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    seed_corpus(corpus)
    proc = subprocess.run(
        [sys.executable, str(TARGET), str(corpus), f"-max_total_time={FUZZ_SECONDS}",
         "-rss_limit_mb=1536", "-timeout=20", "-max_len=65536", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 180)
    tail = proc.stderr[-4000:]
    assert proc.returncode == 0, tail
    assert "Done" in proc.stderr and "stat::number_of_executed_units" in proc.stderr, tail
