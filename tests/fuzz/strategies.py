"""Hypothesis strategies for hostile requests: JSON documents near and far from what each API
expects, shapes that claim more than the bytes carry, base64 right and wrong, encoded images
whole, truncated, bit-flipped and lying about their size."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

from hypothesis import strategies as st
from PIL import Image

from corolla.tensors import V2_DTYPES

V2_TYPES = [*V2_DTYPES.values(), "FP8", "fp32", "", "STRING"]
# Dimensions: small ones that make real tensors, and the sizes that used to allocate GiBs.
DIMS = st.one_of(st.integers(0, 4), st.integers(-3, 70),
                 st.sampled_from([1 << 20, 1 << 28, 1 << 31, (1 << 63) - 1, -(1 << 63)]))
SHAPES = st.lists(DIMS, max_size=6) | st.lists(st.integers(0, 2), min_size=30, max_size=70)

_SCALARS = (st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))


def json_values(max_leaves: int = 40) -> st.SearchStrategy[Any]:
    return st.recursive(
        _SCALARS | st.builds(lambda b: {"b64": base64.b64encode(b).decode()},
                             st.binary(max_size=16)),
        lambda inner: (st.lists(inner, max_size=6)
                       | st.dictionaries(st.sampled_from(["b64", "x", "images", "a", ""]) |
                                         st.text(max_size=5), inner, max_size=4)),
        max_leaves=max_leaves)


def nested_numbers(shape: list[int], leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    if not shape:
        return leaf
    return st.lists(nested_numbers(shape[1:], leaf), min_size=shape[0], max_size=shape[0])


NUMBER = st.integers(-300, 300) | st.floats(-2, 2, allow_nan=False, width=32)


@st.composite
def tensor_values(draw: st.DrawFn) -> Any:
    """A nested list of numbers (rectangular or not), strings, or b64 objects."""
    kind = draw(st.sampled_from(["rect", "rect", "ragged", "b64", "strings", "any"]))
    if kind == "rect":
        shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
        return draw(nested_numbers(shape, NUMBER))
    if kind == "b64":
        return [{"b64": draw(b64_text())} for _ in range(draw(st.integers(0, 3)))]
    if kind == "strings":
        return draw(st.lists(st.text(max_size=8), max_size=4))
    if kind == "ragged":
        return draw(st.lists(st.lists(NUMBER, max_size=4), min_size=2, max_size=4))
    return draw(json_values())


@st.composite
def b64_text(draw: st.DrawFn) -> str:
    """Base64 of an image or of random bytes, sometimes broken (alphabets, padding, spaces)."""
    data = draw(image_bytes() | st.binary(max_size=64))
    text = base64.b64encode(data).decode()
    how = draw(st.sampled_from(["plain", "urlsafe", "nopad", "garbage", "spaces", "mixed"]))
    if how == "urlsafe":
        return base64.urlsafe_b64encode(data).decode()
    if how == "nopad":
        return text.rstrip("=")
    if how == "garbage":
        return text + draw(st.text(min_size=1, max_size=4))
    if how == "spaces":
        return "\n".join(text[i:i + 10] for i in range(0, len(text), 10))
    if how == "mixed":
        return text.replace("A", "-", 1) + "+/"
    return text


# ---- TF Serving REST JSON -------------------------------------------------------------------


@st.composite
def tf_rest_bodies(draw: st.DrawFn) -> dict[str, Any] | Any:
    form = draw(st.sampled_from(["instances", "inputs", "named", "examples", "anything"]))
    doc: dict[str, Any]
    if form == "instances":
        doc = {"instances": draw(tensor_values())}
    elif form == "inputs":
        doc = {"inputs": draw(tensor_values() | st.dictionaries(
            st.sampled_from(["x", "images", "y"]), tensor_values(), max_size=3))}
    elif form == "named":
        doc = {"instances": draw(st.lists(st.dictionaries(
            st.sampled_from(["x", "images", "y"]), tensor_values(), min_size=1, max_size=2),
            max_size=3))}
    elif form == "examples":
        doc = {"examples": draw(st.lists(st.dictionaries(
            st.sampled_from(["x", "images"]), tensor_values(), max_size=2), max_size=3) |
            json_values()), "context": draw(st.none() | json_values())}
    else:
        return draw(json_values())
    if draw(st.booleans()):
        doc["signature_name"] = draw(st.sampled_from(["", "serving_default", "nope"]) |
                                     json_values(3))
    if draw(st.booleans()):
        doc["top_k"] = draw(st.integers(-2, 10) | json_values(3))
    return doc


# ---- KServe V2 -------------------------------------------------------------------------------


@st.composite
def v2_inputs(draw: st.DrawFn, *, binary: bool) -> tuple[list[dict[str, Any]], bytes]:
    """V2 input specs, and the binary data that follows the JSON header."""
    specs: list[dict[str, Any]] = []
    blob = b""
    for i in range(draw(st.integers(0, 3))):
        spec: dict[str, Any] = {
            "name": draw(st.sampled_from(["images", "x", f"in{i}"]) | json_values(2)),
            "datatype": draw(st.sampled_from(V2_TYPES) | json_values(2)),
            "shape": draw(SHAPES | json_values(4)),
        }
        if binary and draw(st.booleans()):
            data = draw(st.binary(max_size=96) | image_bytes().map(
                lambda b: struct.pack("<I", len(b)) + b))
            size: Any = draw(st.just(len(data)) | st.integers(-5, 1 << 40) | json_values(2))
            spec["parameters"] = {"binary_data_size": size}
            blob += data
        elif draw(st.booleans()):
            spec["data"] = draw(tensor_values() | st.lists(NUMBER, max_size=20))
        if draw(st.booleans()):
            spec.setdefault("parameters", {})
            if isinstance(spec["parameters"], dict):
                spec["parameters"]["content_type"] = draw(st.sampled_from(["base64", "str"]))
        specs.append(spec)
    return specs, blob


@st.composite
def v2_bodies(draw: st.DrawFn, *, binary: bool) -> tuple[dict[str, Any] | Any, bytes]:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values()), b""
    specs, blob = draw(v2_inputs(binary=binary))
    doc: dict[str, Any] = {"inputs": specs}
    if draw(st.booleans()):
        doc["outputs"] = draw(st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["probabilities", "y", "nope"])},
            optional={"parameters": st.fixed_dictionaries({}, optional={
                "classification": st.integers(-2, 100) | json_values(2),
                "binary_data": st.booleans() | json_values(2)})}), max_size=3) |
            json_values(3))
    if draw(st.booleans()):
        doc["parameters"] = draw(st.fixed_dictionaries({}, optional={
            "binary_data_output": st.booleans()}) | json_values(3))
    if draw(st.booleans()):
        doc["id"] = draw(json_values(2))
    return doc, blob


# ---- encoded images -------------------------------------------------------------------------

_FORMATS = ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"]
_MODES = {"JPEG": ["RGB", "L", "CMYK"], "PNG": ["RGB", "L", "RGBA", "P", "I;16"],
          "GIF": ["P", "L", "RGB"], "BMP": ["RGB", "L", "P"], "WEBP": ["RGB", "RGBA"],
          "TIFF": ["RGB", "L", "CMYK", "I;16", "RGBA"]}


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """A small real image, or one damaged: truncated, bit-flipped, or with a header that claims
    a huge size (a decompression bomb's shape without its bulk)."""
    fmt = draw(st.sampled_from(_FORMATS))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    mode = draw(st.sampled_from(_MODES[fmt]))
    im = Image.new("RGB", (w, h), (draw(st.integers(0, 255)), 30, 90))
    im = im.convert("L").convert("I;16") if mode == "I;16" else im.convert(mode)
    buf = io.BytesIO()
    kw: dict[str, Any] = {}
    if fmt == "JPEG":
        kw = {"progressive": draw(st.booleans()), "quality": draw(st.integers(5, 95))}
    im.save(buf, fmt, **kw)
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "bomb", "tail"]))
    if damage == "truncate":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))]
    if damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if damage == "bomb":
        return bomb(fmt, draw(st.integers(20_000, 65_535)), draw(st.integers(20_000, 65_535)),
                    data)
    if damage == "tail":
        return data + draw(st.binary(min_size=1, max_size=32))
    return data


def bomb(fmt: str, w: int, h: int, small: bytes) -> bytes:
    """An image whose header claims ``w`` x ``h`` pixels, with almost no data behind it."""
    if fmt == "PNG":
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        chunk = b"IHDR" + ihdr
        out = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(
            ">I", zlib.crc32(chunk))
        data = zlib.compress(b"\x00" * 1_000_000)  # the start of a big zero image: 1 KB
        idat = b"IDAT" + data
        return out + struct.pack(">I", len(data)) + idat + struct.pack(">I", zlib.crc32(idat))
    if fmt == "GIF":
        return small[:6] + struct.pack("<HH", w, h) + small[10:]
    if fmt == "BMP":
        return small[:18] + struct.pack("<ii", w, h) + small[26:]
    if fmt == "JPEG":
        i = small.find(b"\xff\xc0")
        if i < 0:
            i = small.find(b"\xff\xc2")
        if i >= 0:
            return small[:i + 5] + struct.pack(">HH", h, w) + small[i + 9:]
    return small
