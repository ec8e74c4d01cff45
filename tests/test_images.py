"""Image decoding and preprocessing (corolla.images)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corolla.errors import InvalidArgument
from corolla.images import (
    ImageLimits,
    decode,
    normalize,
    preprocess_image,
    resize_to_spec,
    sniff_format,
)
from corolla.model_dir import ImagePreprocessing

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flower_photos"
if not FLOWERS.is_dir():
    FLOWERS = Path("/work/shared/datasets/flower_photos")

SPEC = ImagePreprocessing(input="images", height=16, width=16, scale=1 / 255)


def encode(im: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def solid(
    rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30), mode: str = "RGB"
) -> Image.Image:
    im = Image.new("RGB", size, rgb)
    return im if mode == "RGB" else im.convert(mode)


def mean_rgb(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), np.float32).reshape(-1, 3).mean(axis=0)


def quadrants(w: int = 64, h: int = 48) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2 :] = (0, 255, 0)
    a[h // 2 :, : w // 2] = (0, 0, 255)
    a[h // 2 :, w // 2 :] = (255, 255, 255)
    return Image.fromarray(a)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---- formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("JPEG", "JPEG"),
        ("PNG", "PNG"),
        ("WEBP", "WEBP"),
        ("GIF", "GIF"),
        ("BMP", "BMP"),
        ("TIFF", "TIFF"),
    ],
)
def test_sniff_format(fmt: str, expected: str) -> None:
    assert sniff_format(encode(solid((1, 2, 3)), fmt)) == expected


@pytest.mark.parametrize("data", [b"", b"hello", b"<html>", b"\xff\xd8", b"RIFF0000WAVE"])
def test_sniff_format_rejects(data: bytes) -> None:
    assert sniff_format(data) is None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
@pytest.mark.parametrize("spec", [None, SPEC], ids=["reference", "spec"])
def test_decode_formats(fmt: str, spec: ImagePreprocessing | None) -> None:
    data = encode(solid((200, 30, 40)), fmt)
    im = decode(data, spec)
    assert im.mode == "RGB"
    assert np.allclose(mean_rgb(im), (200, 30, 40), atol=4)


def test_gif_first_frame() -> None:
    frames = [solid((255, 0, 0)), solid((0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert np.allclose(mean_rgb(decode(data, SPEC)), (255, 0, 0), atol=2)


def test_animated_webp_first_frame() -> None:
    frames = [solid((0, 255, 0)), solid((0, 0, 255))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert np.allclose(mean_rgb(decode(data, SPEC)), (0, 255, 0), atol=2)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "JPEG"),
        ("L", "PNG"),
        ("CMYK", "JPEG"),
        ("RGBA", "PNG"),
        ("RGBA", "WEBP"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("P", "GIF"),
        ("1", "PNG"),
        ("CMYK", "TIFF"),
    ],
)
@pytest.mark.parametrize("spec", [None, SPEC], ids=["reference", "spec"])
def test_modes_become_rgb(mode: str, fmt: str, spec: ImagePreprocessing | None) -> None:
    rgb = (255, 255, 255) if mode == "1" else (40, 160, 220)
    src = solid(rgb, mode=mode)
    expected = mean_rgb(src)  # gray for L and LA
    data = encode(src, fmt)
    im = decode(data, spec)
    assert im.mode == "RGB"
    assert np.allclose(mean_rgb(im), expected, atol=6), (mode, fmt, mean_rgb(im), expected)


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = np.asarray(decode(data, SPEC), np.float32)[..., 0]
    assert np.allclose(out, ramp.astype(np.float32) / 257, atol=1.5)
    assert np.allclose(mean_rgb(decode(data)), ramp.mean() / 257, atol=1.5)


def test_one_channel_spec_gives_grayscale() -> None:
    spec = ImagePreprocessing(input="x", height=8, width=8, channels=1, mean=(0.0,), std=(1.0,))
    for fmt in ("JPEG", "PNG"):
        im = decode(encode(solid((30, 200, 90)), fmt), spec)
        assert im.mode == "L"
        assert preprocess_image(encode(solid((30, 200, 90)), fmt), spec).shape == (8, 8, 1)


# ---- EXIF orientation ---------------------------------------------------------------------


def with_orientation(im: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_applied(orientation: int, fmt: str) -> None:
    from PIL import ImageOps

    data = with_orientation(quadrants(), orientation, fmt)
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert shown.size == ((48, 64) if orientation in (5, 6, 7, 8) else (64, 48))
    got = decode(data)
    assert got.size == shown.size
    assert np.abs(np.asarray(got, np.float32) - np.asarray(shown, np.float32)).mean() < 3
    # With a spec, a JPEG may come back DCT-downscaled, in the displayed orientation.
    spec = ImagePreprocessing(input="x", height=12, width=12)
    fast = decode(data, spec)
    portrait = orientation in (5, 6, 7, 8)
    assert (fast.size[0] < fast.size[1]) == portrait
    want = resize_to_spec(shown, spec).astype(np.float32)
    assert np.abs(resize_to_spec(fast, spec).astype(np.float32) - want).mean() < 6


def test_exif_orientation_6_means_rotate_clockwise() -> None:
    # Orientation 6: the viewer turns the stored image 90 degrees clockwise, so the stored
    # bottom-left corner (blue) ends up top-left and the stored top-left (red) top-right.
    data = with_orientation(quadrants(), 6)
    for spec in (None, ImagePreprocessing(input="x", height=32, width=24)):
        im = decode(data, spec)
        assert im.size == (48, 64)  # 2x the spec is the full size here: no DCT downscale
        a = np.asarray(im, np.int32)
        corners = {"tl": a[3, 3], "tr": a[3, -4], "bl": a[-4, 3], "br": a[-4, -4]}
        expected = {"tl": (0, 0, 255), "tr": (255, 0, 0), "bl": (255, 255, 255), "br": (0, 255, 0)}
        for k, rgb in expected.items():
            assert np.abs(corners[k] - rgb).max() < 40, (spec, k, corners[k])


def test_broken_exif_is_ignored() -> None:
    data = encode(solid((10, 20, 200)), "JPEG")
    # An APP1 "Exif" segment with garbage after the marker.
    junk = b"Exif\x00\x00" + b"\x00garbage" * 4
    broken = data[:2] + b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk + data[2:]
    for spec in (None, SPEC):
        assert np.allclose(mean_rgb(decode(broken, spec)), (10, 20, 200), atol=6)


def test_truncated_exif_is_read_past() -> None:
    """A TIFF header whose orientation entry is cut short: Pillow warns ("Corrupt EXIF data")
    and reads on; the photo decodes (the test suite turns warnings into errors, and ignores
    Pillow's UserWarnings for this reason: pyproject.toml)."""
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06"
    buf = io.BytesIO()
    solid((10, 20, 200)).save(buf, "JPEG", exif=exif)
    with pytest.warns(UserWarning, match="Corrupt EXIF data"):
        out = decode(buf.getvalue(), SPEC)
    assert np.allclose(mean_rgb(out), (10, 20, 200), atol=6)


# ---- bad input ----------------------------------------------------------------------------


def gif_bomb() -> bytes:
    """A real GIF whose logical screen claims 65535 x 65535 pixels."""
    data = bytearray(encode(solid((1, 2, 3), size=(4, 4)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def noisy(size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "decode"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "decode"),
        (truncated(encode(noisy(), "JPEG")), "decode"),
        (truncated(encode(noisy(), "JPEG", progressive=True)), "decode"),
        (truncated(encode(noisy(), "PNG")), "decode"),
        (truncated(encode(noisy(), "WEBP")), "decode"),
        (truncated(encode(noisy(), "GIF")), "decode"),
        (truncated(encode(noisy(), "BMP")), "decode"),
        (png_header_only(100_000, 100_000), "over the limit"),
        (png_header_only(0, 10), "decode|no pixels"),
        (gif_bomb(), "over the limit"),
    ],
    ids=[
        "empty",
        "text",
        "jpeg-header",
        "png-magic",
        "jpeg-trunc",
        "progressive-trunc",
        "png-trunc",
        "webp-trunc",
        "gif-trunc",
        "bmp-trunc",
        "png-bomb",
        "png-zero",
        "gif-bomb",
    ],
)
@pytest.mark.parametrize("spec", [None, SPEC], ids=["reference", "spec"])
def test_bad_images_are_invalid_argument(
    data: bytes, message: str, spec: ImagePreprocessing | None
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        preprocess_image(data, spec) if spec else decode(data)


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = encode(solid((1, 2, 3), size=(200, 100)), "PNG")
    limits = ImageLimits(max_pixels=19_999)
    with pytest.raises(InvalidArgument, match="200x100 = 20000 pixels, over the limit of 19999"):
        decode(data, SPEC, limits=limits)
    decode(data, SPEC, limits=ImageLimits(max_pixels=20_000))


def test_pixel_limit_is_corollas_not_pillows() -> None:
    """--max_image_pixels above Pillow's own bomb guard (~179 M pixels) is honoured, and the
    default limit's refusal names Corolla's limit only."""
    claim = png_header_only(15_000, 13_000)  # 195 M pixels; the data is missing
    with pytest.raises(InvalidArgument) as refused:
        decode(claim, SPEC)
    assert "over the limit of 40000000" in refused.value.message
    assert "178956970" not in refused.value.message
    with pytest.raises(InvalidArgument) as failed:  # past the limit check, the decode fails
        decode(claim, SPEC, limits=ImageLimits(max_pixels=200_000_000))
    assert "over the limit" not in failed.value.message


def test_jpegs_decoded_with_dct_scaling_may_have_twice_the_pixels() -> None:
    """An 8000x6000 JPEG (a 48-megapixel phone photo) is over the default 40 M pixel limit but
    decodes at an eighth of its size: RGB and grayscale JPEGs taken by the fast path (with a
    spec) may have twice the limit; other formats, CMYK JPEGs and reference decodes may not."""
    limits = ImageLimits(max_pixels=10_000)
    photo = solid((200, 30, 40), size=(150, 100))  # 15,000 pixels
    for mode in ("RGB", "L"):
        assert decode(encode(photo.convert(mode), "JPEG"), SPEC, limits=limits).size
    refused = [
        (encode(photo, "PNG"), {}),
        (encode(photo.convert("CMYK"), "JPEG"), {}),
        (encode(photo, "JPEG"), {"reference": True}),
        (encode(solid((1, 2, 3), size=(201, 100)), "JPEG"), {}),  # 20,100 > twice the limit
    ]
    for data, kw in refused:
        with pytest.raises(InvalidArgument, match="over the limit of"):
            decode(data, SPEC, limits=limits, **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="over the limit of 10000"):
        decode(encode(photo, "JPEG"), None, limits=limits)


def test_real_bomb_png_is_refused_quickly() -> None:
    # A valid 7000 x 6000 grayscale PNG of zeros: 42 MB of pixels in about 40 KB.
    w, h = 7000, 6000
    z = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    rows = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    assert len(rows) < 200_000
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    assert Image.open(io.BytesIO(data)).size == (w, h)
    with pytest.raises(InvalidArgument, match="7000x6000 = 42000000 pixels, over the limit"):
        preprocess_image(data, SPEC)


# ---- resize, crop, pad, normalise ---------------------------------------------------------


def test_squash() -> None:
    spec = ImagePreprocessing(input="x", height=10, width=20)
    out = resize_to_spec(quadrants(64, 48), spec)
    assert out.shape == (10, 20, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[-1, -1]) == (255, 255, 255)


def test_center_crop_keeps_the_middle() -> None:
    # A wide image: red border columns that the crop must cut away, blue middle.
    a = np.zeros((100, 300, 3), np.uint8)
    a[:, :100] = (255, 0, 0)
    a[:, 100:200] = (0, 0, 255)
    a[:, 200:] = (255, 0, 0)
    spec = ImagePreprocessing(
        input="x", height=32, width=32, resize="center_crop", crop_fraction=0.875
    )
    out = resize_to_spec(Image.fromarray(a), spec)
    assert out.shape == (32, 32, 3)
    assert (out[..., 2] == 255).all() and (out[..., 0] == 0).all()


@pytest.mark.parametrize("size", [(500, 333), (333, 500), (301, 199), (64, 64), (7, 1000)])
def test_center_crop_without_margin_never_fails(size: tuple[int, int]) -> None:
    # crop_fraction 1: the crop box touches the image edges, where rounding used to put it a
    # hair outside and Pillow refused ("box offset can't be negative").
    for hw in (32, 224, 299):
        spec = ImagePreprocessing(input="x", height=hw, width=hw, resize="center_crop")
        assert resize_to_spec(noisy(size), spec).shape == (hw, hw, 3)


def test_pad_letterboxes_with_zeros() -> None:
    spec = ImagePreprocessing(input="x", height=20, width=20, resize="pad")
    out = resize_to_spec(solid((250, 250, 250), size=(40, 20)), spec)
    assert out.shape == (20, 20, 3)
    assert (out[:5] == 0).all() and (out[-5:] == 0).all()
    assert (out[5:15] == 250).all()


def test_channel_order_and_layout() -> None:
    im = solid((10, 20, 30), size=(4, 4))
    bgr = resize_to_spec(im, ImagePreprocessing(input="x", height=2, width=3, channel_order="BGR"))
    assert tuple(bgr[0, 0]) == (30, 20, 10)
    spec = ImagePreprocessing(
        input="x",
        height=2,
        width=3,
        layout="NCHW",
        scale=1 / 255,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.5, 1.0),
    )
    x = preprocess_image(encode(im, "PNG"), spec)
    assert x.shape == spec.input_shape == (3, 2, 3) and x.dtype == np.float32
    expected = [(10 / 255 - 0.5) / 0.25, (20 / 255 - 0.5) / 0.5, (30 / 255 - 0.5) / 1.0]
    assert np.allclose(x[:, 0, 0], expected, atol=1e-6)


def test_normalize_dtypes_and_out() -> None:
    px = np.full((2, 2, 3), 51, np.uint8)
    for dtype in ("float32", "float16", "uint8"):
        spec = ImagePreprocessing(input="x", height=2, width=2, scale=1 / 255, dtype=dtype)
        out = normalize(px, spec)
        assert out.dtype == np.dtype(dtype)
        assert np.allclose(out.astype(np.float32), 51 if dtype == "uint8" else 0.2, atol=1e-3)
    spec = ImagePreprocessing(input="x", height=2, width=2, scale=2.0, mean=(1, 2, 3))
    buf = np.zeros((2, 2, 3), np.float32)
    assert normalize(px, spec, out=buf) is buf
    assert np.allclose(buf[0, 0], (101, 100, 99))


# ---- the fast JPEG path against the reference decode --------------------------------------

# Tolerances, in pixel units (0..255) of the preprocessed tensor, of decode(spec) (libjpeg-turbo
# DCT-domain downscaling to >= 2x the size the resize needs) against decode(reference=True)
# (full decode), both followed by the same resize: (worst photo's mean |diff|, mean over the
# photos). Measured on every 20th flower photo: the DCT's 5/8, 3/4... scales and its 1/4 scale
# under a box filter differ most (crop32/area: worst 10.7, mean 4.0; squash96: worst 5.6, mean
# 1.1; pad64/bicubic: worst 4.2, mean 1.1; photos of 500 px at 224 decode at full size: 0).
# Third number: the worst synthetic noisy photo of an awkward size (measured 0.8, 1.9, 1.8, 3.0).
FAST_SPECS = {
    "crop224": (
        ImagePreprocessing(
            input="x", height=224, width=224, resize="center_crop", crop_fraction=0.875
        ),
        (1.0, 0.5, 1.2),
    ),
    "squash96": (ImagePreprocessing(input="x", height=96, width=96), (7.0, 2.0, 2.8)),
    "pad64": (
        ImagePreprocessing(input="x", height=64, width=64, resize="pad", interpolation="bicubic"),
        (6.0, 2.0, 2.6),
    ),
    "crop32area": (
        ImagePreprocessing(
            input="x", height=32, width=32, resize="center_crop", interpolation="area"
        ),
        (13.0, 5.5, 4.5),
    ),
}


def fast_vs_reference(data: bytes, spec: ImagePreprocessing) -> float:
    fast = preprocess_image(data, spec).astype(np.float32)
    ref = preprocess_image(data, spec, reference=True).astype(np.float32)
    assert fast.shape == ref.shape == spec.input_shape
    return float(np.abs(fast - ref).mean())


@pytest.mark.skipif(not FLOWERS.is_dir(), reason="flower_photos dataset not present")
@pytest.mark.parametrize("name", FAST_SPECS)
def test_fast_jpeg_path_matches_reference_on_real_photos(name: str) -> None:
    spec, (worst, mean, _) = FAST_SPECS[name]
    photos = sorted(FLOWERS.glob("*/*.jpg"))[::80]
    assert len(photos) >= 30
    diffs = [fast_vs_reference(p.read_bytes(), spec) for p in photos]
    assert max(diffs) <= worst, (max(diffs), photos[int(np.argmax(diffs))])
    assert float(np.mean(diffs)) <= mean, np.mean(diffs)


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A synthetic photo: smooth gradients, hard-edged discs and mild noise (uint8 HxWx3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.5, 3.0, 2)
        img[..., c] = 128 + 90 * np.sin(2 * np.pi * (fx * x / width + fy * y / height + c / 3))
    for _ in range(12):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.02, 0.15) * min(width, height)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def large_photos() -> list[bytes]:
    out = []
    for i, (w, h) in enumerate([(4001, 2999), (2403, 3197)]):
        out.append(encode(Image.fromarray(photo_like(w, h, i)), "JPEG", quality=90))
    # The same photo stored sideways with EXIF orientation 6.
    out.append(with_orientation(Image.fromarray(photo_like(3601, 2397, 7)), 6))
    return out


@pytest.mark.parametrize("name", FAST_SPECS)
def test_fast_jpeg_path_matches_reference_on_large_photos(
    name: str, large_photos: list[bytes]
) -> None:
    spec, (_, _, tolerance) = FAST_SPECS[name]
    for data in large_photos:
        w, h = Image.open(io.BytesIO(data)).size
        fw, fh = decode(data, spec).size
        assert fw * fh < w * h / 2  # the shortcut is taken
        assert fast_vs_reference(data, spec) <= tolerance


@pytest.mark.parametrize("size", [(600, 313), (600, 369), (313, 600), (1280, 853)])
def test_fast_jpeg_path_pads_exactly_like_the_reference(size: tuple[int, int]) -> None:
    # The DCT-downscaled size is rounded up to whole pixels; the letterbox must still come
    # from the photo's own size, or the padding moves by a row.
    data = encode(solid((255, 255, 255), size=size), "JPEG", quality=95)
    spec = ImagePreprocessing(input="x", height=32, width=32, resize="pad")
    assert decode(data, spec).size != size
    fast, ref = preprocess_image(data, spec), preprocess_image(data, spec, reference=True)
    assert ((fast > 128).all(axis=2) == (ref > 128).all(axis=2)).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mean": (127.0,) * 3, "std": (128.0,) * 3},  # EfficientNet-Lite
        {"scale": 1 / 255},  # the tutorial CNN
        {"mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)},  # per channel
        {"mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375), "layout": "NCHW"},
        {"scale": 1 / 255, "dtype": "float16"},
        {"scale": 1 / 255, "channel_order": "BGR", "mean": (1.0, 2.0, 3.0)},
        {"channels": 1, "mean": (0.5,), "std": (2.0,)},
    ],
)
def test_normalize_lookup_is_bit_identical_to_the_arithmetic(kwargs: dict[str, object]) -> None:
    spec = ImagePreprocessing(input="x", height=6, width=5, **kwargs)  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    px = rng.integers(0, 256, (3, 6, 5, spec.channels), dtype=np.uint8)
    px[0, 0, 0] = 0
    px[0, 0, 1] = 255
    if spec.channel_order == "BGR":
        px = px[..., ::-1]  # a non-contiguous view, as resize_to_spec returns for BGR
    a = np.asarray([spec.scale / s for s in spec.std], dtype=np.float32)
    b = np.asarray([-m / s for m, s in zip(spec.mean, spec.std, strict=True)], dtype=np.float32)
    want = px.astype(np.float32) * a + b
    if spec.dtype == "float16":
        want = want.astype(np.float16)
    if spec.layout == "NCHW":
        want = np.moveaxis(want, -1, -3)
    got = normalize(px, spec)
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
    assert np.array_equal(got, want)
    buf = np.full(want.shape, -7, dtype=want.dtype)
    view = buf[1]
    assert normalize(px[1], spec, out=view) is view
    assert np.array_equal(buf[1], want[1]) and (buf[0] == -7).all()


def test_unidentifiable_image_message_names_the_format_not_an_object() -> None:
    with pytest.raises(InvalidArgument) as info:
        decode(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    assert "not a valid JPEG file" in info.value.message
    assert "BytesIO" not in info.value.message


# ---- JPEG header without Pillow -----------------------------------------------------------


def _with_app1(data: bytes, *bodies: bytes) -> bytes:
    """``data`` (a JPEG) with APP1 segments holding ``bodies`` right after its SOI."""
    segments = b"".join(b"\xff\xe1" + struct.pack(">H", len(b) + 2) + b for b in bodies)
    return data[:2] + segments + data[2:]


def _exif(orientation: int, *, kind: int = 3) -> bytes:
    """An EXIF APP1 body (big-endian TIFF) with one Orientation entry of TIFF type ``kind``."""
    value = struct.pack(">HH", orientation, 0) if kind == 3 else struct.pack(">I", orientation)
    ifd = struct.pack(">H", 1) + struct.pack(">HHI", 0x0112, kind, 1) + value + b"\0\0\0\0"
    return b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_header_agrees_with_pillow(orientation: int) -> None:
    from corolla.jpeg_header import read_jpeg_header

    data = with_orientation(quadrants(), orientation)
    im = Image.open(io.BytesIO(data))
    assert read_jpeg_header(data) == (*im.size, im.getexif().get(0x0112, 1))
    hand_made = _with_app1(encode(quadrants(), "JPEG"), _exif(orientation))
    assert read_jpeg_header(hand_made) == (64, 48, orientation)
    gray = encode(quadrants().convert("L"), "JPEG")
    assert read_jpeg_header(gray) == (64, 48, 1)


def test_jpeg_header_leaves_unusual_layouts_to_pillow() -> None:
    from corolla.jpeg_header import read_jpeg_header

    plain = encode(quadrants(), "JPEG")
    xmp = (b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description "
           b"tiff:Orientation=\"6\"/></x:xmpmeta>")
    cmyk = encode(quadrants().convert("CMYK"), "JPEG")
    for data in (
        cmyk,  # Pillow converts CMYK itself
        _with_app1(plain, _exif(6), _exif(3)),  # Pillow joins two EXIF segments
        _with_app1(plain, xmp),  # no EXIF orientation: Pillow reads XMP's
        _with_app1(plain, _exif(6, kind=4)),  # a LONG, not a SHORT
        plain[:40],  # truncated inside the header
    ):
        assert read_jpeg_header(data) is None
    # The XMP-only orientation still turns the photo, through Pillow.
    spec = ImagePreprocessing(input="x", height=12, width=12)
    turned = decode(_with_app1(plain, xmp), spec)
    assert turned.size[0] < turned.size[1]
    # Orientation given as a LONG: Pillow reads the value all the same.
    long_six = decode(_with_app1(plain, _exif(6, kind=4)), spec)
    assert long_six.size[0] < long_six.size[1]


# ---- decode_cost: the memory a decode will take, from the header (corolla.admission) ---------


@pytest.mark.parametrize(("fmt", "save", "per_pixel"), [
    ("JPEG", {}, 1.0), ("JPEG", {"progressive": True}, 6.5), ("PNG", {}, 8.5),
    ("GIF", {}, 8.5), ("BMP", {}, 8.5), ("TIFF", {}, 8.5), ("WEBP", {}, 17.0),
    ("WEBP", {"lossless": True}, 17.0),
])
def test_decode_cost_reads_the_size_from_the_header(
        make_image: Callable[..., bytes], fmt: str, save: dict[str, object],
        per_pixel: float) -> None:
    from corolla.images import decode_cost

    data = make_image("red", fmt, size=(321, 123), **save)
    assert decode_cost(data) == int(321 * 123 * per_pixel)


def test_decode_cost_of_cmyk_jpeg_and_garbage(make_image: Callable[..., bytes]) -> None:
    from corolla.images import decode_cost

    assert decode_cost(make_image("red", "JPEG", size=(100, 10), mode="CMYK")) == 8500
    assert decode_cost(b"") == decode_cost(b"not an image") == 0
    assert decode_cost(b"\xff\xd8\xff\xe0 truncated") == 0
    webp_rgba = make_image("red", "WEBP", size=(50, 20), mode="RGBA")
    assert decode_cost(webp_rgba) == 50 * 20 * 17


def test_jpeg_header_that_libjpeg_turbo_cannot_name() -> None:
    """Found by the image fuzzer: a progressive SOF with odd sampling factors, on which
    simplejpeg's header read raises KeyError. Its cost comes from Pillow's header read, and
    decoding it is a client error, never an unexpected exception."""
    import base64

    from corolla.images import decode_cost
    from corolla.jpeg_header import read_jpeg_header, sof_header

    data = base64.b64decode(
        "/9j//////////////////////////8IAEQgAEAAYAwEUAAIRAQMRAf///////////8QAFgEBAQEAAAAAAAAAAA"
        "AAAAAAAAUG/9oADAMBAAIQAxAwAF//2Q==")
    assert sof_header(data) is None and read_jpeg_header(data) is None
    assert decode_cost(data) == int(24 * 16 * 8.5)
    with pytest.raises(InvalidArgument, match="cannot decode JPEG"):
        preprocess_image(data, SPEC)
