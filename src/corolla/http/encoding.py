"""Compressed request bodies (``Content-Encoding: gzip`` or ``deflate``), for every REST API.

TF Serving's HTTP server inflates gzip request bodies before its handlers see them
(``RequestHandlerOptions::auto_uncompress_input``, on by default), and tritonclient compresses
KServe V2 bodies with gzip or deflate when asked to. Inflated bodies are capped at the server's
request body limit (``--max_request_body_bytes``, which :class:`LimitsMiddleware` puts in the
ASGI scope as ``corolla.max_body``), so that a 1 MiB zip bomb cannot make the server hold a
GiB per request: past it, the request is answered 413 as an uncompressed body that large is.
:func:`request_body` reads and inflates a request's body for the REST handlers.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.types import Scope

from corolla import admission
from corolla.errors import Code, CorollaError, InvalidArgument

T = TypeVar("T")

# JSON bodies from this size up are parsed (and turned into tensors) in a thread, one at a time
# per process. On the event loop, a 30 MB body of pixel values (a batch of 25 224x224 images as
# TF Serving's JSON) holds every other request of the process for seconds; and several parsed
# at once each hold their Python objects (8 bodies of 32 MB of small numbers took a process to
# 2.2 GB). The parse holds the GIL either way, so one at a time costs no throughput.
BIG_BODY_BYTES = 1 << 20


class BodyParser:
    """Parses request bodies for the REST handlers of one server (its event loop): small ones
    right here, big ones in a thread, one at a time."""

    def __init__(self) -> None:
        self._gate = asyncio.Semaphore(1)

    async def parse(self, size: int, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` for a body of ``size`` bytes."""
        if size < BIG_BODY_BYTES:
            return fn(*args)
        async with self._gate:
            return await asyncio.to_thread(fn, *args)


# Inflated request bodies larger than this are refused when the server sets no body limit
# (``--max_request_body_bytes=0``): a zip bomb must not exhaust memory.
MAX_INFLATED_BYTES = 1 << 30


class BodyTooLarge(CorollaError):
    """The request body inflates past the limit: HTTP 413, as for a body sent that large."""

    code = Code.RESOURCE_EXHAUSTED

    @property
    def http_status(self) -> int:
        return 413


def body_limit(scope: Scope) -> int:
    """The inflated-size limit for a request: the server's body limit, else the fixed cap."""
    limit = scope.get("corolla.max_body")
    return limit if isinstance(limit, int) and limit > 0 else MAX_INFLATED_BYTES


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
        raise BodyTooLarge(f"Request body inflates past the limit of {limit} bytes")
    return out


async def read_body(request: Request) -> bytes:
    """The whole request body, as Starlette's ``request.body()`` reads it, without its async
    generator and the bookkeeping around it (every upload goes through here)."""
    chunks: list[bytes] = []
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def request_body(request: Request) -> bytes:
    """The request body, inflated when compressed: TF Serving's HTTP server gunzips bodies sent
    with ``Content-Encoding: gzip`` (``RequestHandlerOptions::auto_uncompress_input``)."""
    encoding = ""
    for name, value in request.scope["headers"]:  # ASGI header names are lower case
        if name == b"content-encoding":
            encoding = value.decode("latin-1")
            break
    body = await read_body(request)
    if encoding in ("", "identity"):
        return body
    limit = body_limit(request.scope)
    # The inflated size is known only once inflated: take the most it may be, then give back
    # what it did not take. With a memory budget, that is at most what is left of the budget
    # beside the compressed body (which the request keeps): inflating past it can never fit.
    room = admission.room()
    cap = limit if room is None else min(limit, room)
    if cap <= 0:
        raise admission.too_large("inflating the request body")
    held = await admission.reserve(cap, "inflating the request body")
    try:
        out = inflate(body, encoding, limit=cap)
    except BodyTooLarge:
        if cap < limit:
            admission.release(held)
            raise admission.too_large("inflating the request body") from None
        raise
    admission.release(held - len(out))
    return out
