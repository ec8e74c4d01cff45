"""Compressed request bodies (``Content-Encoding: gzip`` or ``deflate``), for every REST API.

TF Serving's HTTP server inflates gzip request bodies before its handlers see them
(``RequestHandlerOptions::auto_uncompress_input``, on by default), and tritonclient compresses
KServe V2 bodies with gzip or deflate when asked to. Inflated bodies are capped, so that a small
zip bomb cannot exhaust memory. Pure functions.
"""

from __future__ import annotations

import zlib

from corolla.errors import InvalidArgument

# Inflated request bodies larger than this are refused (a zip bomb must not exhaust memory).
MAX_INFLATED_BYTES = 1 << 30

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def inflate(body: bytes, encoding: str, *, limit: int = MAX_INFLATED_BYTES) -> bytes:
    """``body`` decoded per its ``Content-Encoding`` header value (identity: unchanged)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise InvalidArgument(f"unsupported Content-Encoding {encoding!r} (gzip, deflate)")
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit)
    except zlib.error as exc:
        raise InvalidArgument(f"cannot {encoding}-decode the request body: {exc}") from exc
    if d.unconsumed_tail:
        raise InvalidArgument(f"the request body inflates past {limit} bytes")
    return out
