"""A plain JPEG's size and EXIF orientation, read without Pillow.

Opening a JPEG with Pillow to learn its size, colour mode and EXIF orientation parses every
header segment in Python; libjpeg-turbo's header parser (simplejpeg) and the few lines below do
the same for the common case. ``corolla.images`` decodes such a JPEG with libjpeg-turbo directly
and leaves every other one to Pillow, so the answer here must be exactly Pillow's or None.

Depends on simplejpeg only: benchmarks/peers/common_onnx.py loads this file by path, so that the
peer servers decode photos the way Corolla does.
"""

from __future__ import annotations

from typing import Literal

import simplejpeg

# Colour spaces that decode as Pillow's "RGB" and "L" modes do; CMYK and YCCK go through Pillow,
# which converts them properly.
PLAIN_COLORSPACES = frozenset({"YCbCr", "RGB", "Gray"})
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"


def sof_header(data: bytes | bytearray | memoryview) -> tuple[int, int, str] | None:
    """(height, width, colorspace) from libjpeg-turbo's header read, or None where it cannot
    read one. simplejpeg raises KeyError, not ValueError, for a header whose subsampling or
    colorspace code it has no name for (found by the image fuzzer: a progressive SOF with odd
    sampling factors)."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except (ValueError, KeyError):
        return None
    return height, width, colorspace


def read_jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, EXIF orientation) of a plain RGB or grayscale JPEG, or None: then Pillow
    must read the header. Only a layout whose orientation this reads as Pillow's ``getexif``
    does gets an answer: no EXIF segment and no XMP (orientation 1), or one EXIF segment whose
    first IFD holds the orientation as one SHORT (or none, and no XMP, where Pillow would look
    next)."""
    sof = sof_header(data)
    if sof is None:
        return None
    height, width, colorspace = sof
    if colorspace not in PLAIN_COLORSPACES or width <= 0 or height <= 0:
        return None
    exif: bytes | None = None
    xmp = False
    pos, n = 2, len(data)  # after SOI
    while True:
        if pos + 4 > n or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan (or end): every header segment is behind
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or end > n:
            return None
        if marker == 0xE1:
            body = data[pos + 4:end]
            if body.startswith(b"Exif\x00\x00"):
                if exif is not None:
                    return None  # Pillow joins several EXIF segments
                exif = body[6:]
            elif body.startswith(_XMP):
                xmp = True
        pos = end
    orientation = tiff_orientation(exif) if exif is not None else 0
    if orientation is None or (orientation == 0 and xmp):
        return None
    return width, height, orientation or 1


def tiff_orientation(tiff: bytes) -> int | None:
    """The Orientation tag (0x0112) of a TIFF block's first IFD: its value, 0 when absent, None
    when the block is not laid out plainly (Pillow reads it then)."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order: Literal["little", "big"] = "little" if tiff[:2] == b"II" else "big"
    if int.from_bytes(tiff[2:4], order) != 42:
        return None
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd < 8 or ifd + 2 > len(tiff):
        return None
    for i in range(int.from_bytes(tiff[ifd:ifd + 2], order)):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            return None
        if int.from_bytes(tiff[entry:entry + 2], order) == 0x0112:
            kind = int.from_bytes(tiff[entry + 2:entry + 4], order)
            count = int.from_bytes(tiff[entry + 4:entry + 8], order)
            if kind != 3 or count != 1:  # not one SHORT
                return None
            return int.from_bytes(tiff[entry + 8:entry + 10], order)
    return 0
