"""Image decoding and preprocessing, per a model's :class:`ImagePreprocessing` spec.

The trainer and the server both call :func:`resize_to_spec` and :func:`normalize`, so a photo
becomes the same tensor in both. The server decodes JPEGs with libjpeg-turbo (simplejpeg) and
asks it for DCT-domain downscaling to the smallest size not below what the resize needs; the
result differs from a full decode by a small, tested tolerance (``reference=True`` skips that
shortcut). Other formats (PNG, WebP, BMP, GIF first frame, TIFF) and JPEGs that simplejpeg cannot
take (CMYK) go through Pillow. EXIF orientation is applied; grayscale, palette, CMYK and alpha
images become RGB. Decoders and Pillow's resize release the GIL: call these from worker threads.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from corolla.errors import InvalidArgument
from corolla.jpeg_header import PLAIN_COLORSPACES, read_jpeg_header, sof_header
from corolla.model_dir import ImagePreprocessing

DEFAULT_MAX_PIXELS = 40_000_000
# Every image's size is checked against Corolla's own limit (--max_image_pixels) from its header,
# before any pixel is decoded (_open, decode). Pillow's guard (MAX_IMAGE_PIXELS, an error at twice
# its 89.5 M) would cap that flag at ~179 M pixels and answer with Pillow's figure instead.
Image.MAX_IMAGE_PIXELS = None
# A JPEG that decode's fast path takes (RGB or grayscale, with a spec) is decoded with DCT
# scaling, at an eighth of its width and height for a photo much larger than the model input:
# a baseline 8000x6000 JPEG (a 48-megapixel phone photo) peaks at about 54 MB, a progressive one
# (whose coefficients libjpeg holds at full size) at about 180 MB, where a 48-megapixel PNG
# takes 430 MB. Such JPEGs may have this many times the pixel limit.
FAST_JPEG_PIXEL_FACTOR = 2

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True, kw_only=True)
class ImageLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS


def sniff_format(data: bytes) -> str | None:
    """The container format from magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


# Peak memory per source pixel while an image is decoded and preprocessed (bytes), measured on
# 24-megapixel images (benchmarks/decode_memory.py): a baseline JPEG on the DCT-scaled fast path
# 0.4, a progressive one 3.2 (libjpeg holds every coefficient: 6 with 4:4:4 chroma), PNG, GIF,
# BMP, TIFF and CMYK JPEGs through Pillow 8, WebP 16. With some margin:
_COST_PER_PIXEL = {"JPEG": 1.0, "JPEG progressive": 6.5, "WEBP": 17.0}
_PILLOW_COST_PER_PIXEL = 8.5
# SOF markers of progressive JPEGs (SOF2, SOF6, SOF10, SOF14).
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})


def decode_cost(data: bytes | bytearray | memoryview) -> int:
    """About the most memory (bytes) that decoding ``data`` for a model will take, from its
    header alone (microseconds for JPEG, PNG, GIF and BMP; Pillow reads WebP and TIFF headers).
    0 for bytes that decode would refuse before decoding (not an image, no size)."""
    fmt = sniff_format(bytes(data[:16]))
    try:
        if fmt == "JPEG":
            sof = sof_header(data)
            if sof is None:  # Pillow decodes what libjpeg-turbo's header read refuses
                with Image.open(io.BytesIO(data)) as im:
                    width, height = im.size
                return int(width * height * _PILLOW_COST_PER_PIXEL)
            height, width, colorspace = sof
            if colorspace not in PLAIN_COLORSPACES:
                per_pixel = _PILLOW_COST_PER_PIXEL
            else:
                per_pixel = _COST_PER_PIXEL[
                    "JPEG progressive" if _progressive(data) else "JPEG"]
        elif fmt == "PNG":
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            per_pixel = _PILLOW_COST_PER_PIXEL
        elif fmt == "GIF":
            width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10],
                                                                                 "little")
            per_pixel = _PILLOW_COST_PER_PIXEL
        elif fmt == "BMP":
            width = abs(int.from_bytes(data[18:22], "little", signed=True))
            height = abs(int.from_bytes(data[22:26], "little", signed=True))
            per_pixel = _PILLOW_COST_PER_PIXEL
        elif fmt == "WEBP":
            width, height = _webp_size(data)
            per_pixel = _COST_PER_PIXEL["WEBP"]
        elif fmt is not None:  # TIFF: its size is in a tag; Pillow takes ~1 ms to find it
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
            per_pixel = _COST_PER_PIXEL.get(fmt, _PILLOW_COST_PER_PIXEL)
        else:
            return 0
    except (ValueError, OSError, UnidentifiedImageError, SyntaxError):
        return 0  # decode refuses it without decoding
    return int(max(0, width) * max(0, height) * per_pixel)


def _webp_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """A WebP's canvas size from its first chunk (VP8X, VP8 or VP8L), or (0, 0)."""
    chunk = data[12:16]
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8 ":
        return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                int.from_bytes(data[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return 0, 0


def _progressive(data: bytes | bytearray | memoryview) -> bool:
    """Whether a JPEG's frame header (the SOF marker before its first scan) is progressive."""
    pos, n = 2, len(data)
    while pos + 4 <= n and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xDA, 0xD9):
            return False
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker in _PROGRESSIVE_SOF
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def _open(data: bytes, limits: ImageLimits, *, fast_jpeg: bool = False) -> Image.Image:
    if not data:
        raise InvalidArgument("image is empty (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidArgument(
            "bytes are not an image Corolla can decode (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:  # its message names a BytesIO object's address
        raise InvalidArgument(
            f"cannot decode image: the bytes start like {fmt} but are not a valid {fmt} "
            "file") from exc
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot decode image: {exc}") from exc
    w, h = im.size
    if w <= 0 or h <= 0:
        raise InvalidArgument("image has no pixels")
    limit = limits.max_pixels
    if fast_jpeg and im.format == "JPEG" and im.mode in ("RGB", "L"):
        limit *= FAST_JPEG_PIXEL_FACTOR
    _check_pixels(w, h, limit)
    return im


def _check_pixels(w: int, h: int, limit: int) -> None:
    if w * h > limit:
        raise InvalidArgument(f"image is {w}x{h} = {w * h} pixels, over the limit of {limit}")


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not fail an otherwise good image
        return 1


def _min_source_size(src_w: int, src_h: int, spec: ImagePreprocessing) -> tuple[int, int]:
    """The smallest (w, h) a downscaled decode may have so the resize still downsamples."""
    if spec.resize == "center_crop":
        s = max(spec.height / spec.crop_fraction / src_h, spec.width / spec.crop_fraction / src_w)
    elif spec.resize == "pad":
        s = min(spec.height / src_h, spec.width / src_w)
    else:
        return spec.width, spec.height
    return math.ceil(src_w * s), math.ceil(src_h * s)


def _decode_jpeg_fast(data: bytes, w: int, h: int, orientation: int, spec: ImagePreprocessing
                      ) -> Image.Image:
    """An RGB or grayscale JPEG of ``w`` x ``h`` pixels and that EXIF orientation, decoded with
    libjpeg-turbo at a DCT scale and turned upright."""
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: the display size is swapped
        min_w, min_h = _min_source_size(h, w, spec)
        min_w, min_h = min_h, min_w
    else:
        min_w, min_h = _min_source_size(w, h, spec)
    # Ask the DCT for a power-of-two scale (1/2, 1/4, 1/8) that keeps at least four times the
    # needed size: the resize that follows then still antialiases over >= 4 source pixels, so
    # the result stays within a small, tested tolerance of a full decode; photos under four
    # times the target decode at full size. (Scales like 5/8 or 3/4 differ the most from a
    # full decode: measured in tests/test_images.py.)
    scale = 1
    while scale < 8 and w // (scale * 2) >= 4 * min_w and h // (scale * 2) >= 4 * min_h:
        scale *= 2
    try:
        arr = simplejpeg.decode_jpeg(
            data, colorspace="RGB", fastdct=False, fastupsample=False,
            min_width=math.ceil(w / scale), min_height=math.ceil(h / scale), strict=True,
        )  # fmt: skip
    except ValueError as exc:
        raise InvalidArgument(f"cannot decode JPEG: {exc}") from exc
    out = Image.fromarray(arr, "RGB")
    if orientation in _TRANSPOSE:
        out = out.transpose(_TRANSPOSE[orientation])
    # resize_to_spec takes crop and pad geometry from the full size: the downscaled size is
    # rounded up to whole pixels, and rounding from it would shift the result by a pixel.
    out.info["source_size"] = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    return out


def decode(
    data: bytes, spec: ImagePreprocessing | None = None, *, limits: ImageLimits | None = None,
    reference: bool = False,
) -> Image.Image:
    """Decode encoded image bytes to an RGB (or L for 1-channel specs) Pillow image.

    With a spec and ``reference=False``, a JPEG may come back downscaled (never below what
    ``spec`` needs). Raises InvalidArgument for anything that is not a whole, decodable image.
    """
    limits = limits or ImageLimits()
    fast = spec is not None and not reference
    # A plain JPEG's size and orientation without Pillow (corolla.jpeg_header), else Pillow's;
    # CMYK and YCCK JPEGs, which Pillow converts properly, and other formats take Pillow's path.
    header = read_jpeg_header(data) if fast and data[:3] == b"\xff\xd8\xff" else None
    if header is not None:
        _check_pixels(header[0], header[1], limits.max_pixels * FAST_JPEG_PIXEL_FACTOR)
    else:
        im = _open(data, limits, fast_jpeg=fast)
        if fast and im.format == "JPEG" and im.mode in ("RGB", "L"):
            header = (*im.size, _orientation(im))
    if header is not None:
        assert spec is not None
        out = _decode_jpeg_fast(data, *header, spec)
        return out.convert("L") if spec.channels == 1 else out
    # Corolla's own pixel limit was checked in _open, from the header.
    try:
        im.seek(0)  # GIF/WebP: the first frame
        im.load()
        im = ImageOps.exif_transpose(im) or im
        if im.mode.startswith("I;16"):
            # 16-bit grayscale: Pillow's convert clips at 255; keep the high byte instead.
            im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8), "L")
        mode = "L" if spec is not None and spec.channels == 1 else "RGB"
        if im.mode in ("P", "PA", "LA", "La", "I;16", "I", "F") and mode == "RGB":
            im = im.convert("RGBA")
        return im.convert(mode)
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidArgument(f"cannot decode image: {exc}") from exc


def resize_to_spec(im: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """Resize/crop/pad a decoded image to the spec's size: uint8 array (H, W, C)."""
    resample = _RESAMPLE[spec.interpolation]
    w, h = im.size
    sw, sh = im.info.get("source_size", (w, h))  # before a DCT downscale (decode's fast path)
    if spec.resize == "squash":
        out = im.resize((spec.width, spec.height), resample)
    elif spec.resize == "center_crop":
        s = max(spec.height / spec.crop_fraction / sh, spec.width / spec.crop_fraction / sw)
        cw, ch = spec.width / s * w / sw, spec.height / s * h / sh
        # Clamped: rounding may put an edge a hair outside the image, which Pillow refuses.
        left, top = max(0.0, (w - cw) / 2), max(0.0, (h - ch) / 2)
        box = (left, top, min(float(w), left + cw), min(float(h), top + ch))
        out = im.resize((spec.width, spec.height), resample, box=box)
    else:  # pad
        s = min(spec.height / sh, spec.width / sw)
        nw, nh = max(1, round(sw * s)), max(1, round(sh * s))
        canvas = Image.new(im.mode, (spec.width, spec.height))
        canvas.paste(im.resize((nw, nh), resample), ((spec.width - nw) // 2,
                                                       (spec.height - nh) // 2))
        out = canvas
    arr = np.asarray(out, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if spec.channel_order == "BGR":
        arr = arr[:, :, ::-1]
    return arr


@functools.lru_cache(maxsize=64)
def _lookup_tables(scale: float, mean: tuple[float, ...], std: tuple[float, ...], dtype: str
                   ) -> tuple[np.ndarray, bool]:
    """Per channel, the model input value of each of the 256 pixel values, computed with the
    same float32 operations as ``pixel * (scale / std) + (-mean / std)``; and whether all
    channels share one table."""
    v = np.arange(256, dtype=np.float32)
    rows = [v * np.float32(scale / s) + np.float32(-m / s)
            for m, s in zip(mean, std, strict=True)]
    tables = np.stack(rows).astype(np.float16 if dtype == "float16" else np.float32)
    tables.setflags(write=False)
    return tables, bool((tables == tables[:1]).all())


def normalize(pixels: np.ndarray, spec: ImagePreprocessing, out: np.ndarray | None = None
              ) -> np.ndarray:
    """uint8 (..., H, W, C) pixels to the model's input: ``(p * scale - mean) / std`` in layout.

    A uint8 pixel has 256 values, so the conversion is a table lookup (one pass, no float
    temporaries), written straight into ``out`` when the layouts agree. The tables hold exactly
    what the float32 arithmetic gives, so the result is bit-identical to it.
    """
    if spec.dtype == "uint8":
        result = pixels
    else:
        tables, uniform = _lookup_tables(spec.scale, tuple(spec.mean), tuple(spec.std),
                                         spec.dtype)
        direct = (out is not None and spec.layout == "NHWC" and out.shape == pixels.shape
                  and out.dtype == tables.dtype and out.flags.c_contiguous)
        result = out if direct and out is not None else np.empty(pixels.shape, tables.dtype)
        if uniform:
            np.take(tables[0], pixels, out=result, mode="clip")
        else:
            for c in range(pixels.shape[-1]):
                np.take(tables[c], pixels[..., c], out=result[..., c], mode="clip")
        if direct:
            return result
    if spec.layout == "NCHW":
        result = np.moveaxis(result, -1, -3)
    if out is not None:
        out[...] = result
        return out
    return np.ascontiguousarray(result)


def preprocess_image(
    data: bytes, spec: ImagePreprocessing, *, limits: ImageLimits | None = None,
    reference: bool = False,
) -> np.ndarray:
    """Encoded image bytes to one model input example of shape ``spec.input_shape``."""
    return normalize(resize_to_spec(decode(data, spec, limits=limits, reference=reference), spec),
                     spec)
