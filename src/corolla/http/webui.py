"""The web page on the REST port: ``GET /`` and its static files under ``/ui/``.

The page (``corolla/webui/``, shipped as package data) is static: it holds no data and calls only
the public REST API (``POST /v2/repository/index``, ``:predict``, ``/metrics``) from the browser,
with the API key a person types when the server requires one. So its files need no key: the
server gives the auth middleware their exact paths (:data:`OPEN_PATHS`), never a prefix. Nor
do they count against ``--max_concurrent_requests``: a busy server still shows its page, whose
API calls are counted.

The files are read once, when the routes are built, and answered from memory (gzip-compressed
too, for clients that accept it) with a strong ETag; every answer carries a strict
Content-Security-Policy (no inline script or style, nothing from another origin) and the usual
hardening headers. The routes are in the server's route table as what they are: no API
(``api=None``) and no model. Any other path under ``/ui/`` is no route (404).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from corolla.http.routes import Handler, Route

PAGE_PATH = "/"
ASSET_PREFIX = "/ui/"
PAGE_FILE = "index.html"
# The files of the page, and their media types: nothing else under corolla/webui is served.
FILES = {
    PAGE_FILE: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
OPEN_PATHS = frozenset({PAGE_PATH, *(ASSET_PREFIX + name for name in FILES if name != PAGE_FILE)})
# What the page may fetch: its own files, photos the person picked (blob: previews), and the
# server's own API. No inline script or style, no frames, no forms posted anywhere.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
       "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "geolocation=(), microphone=(), payment=(), usb=()",
}
# Size budget of the whole page (every file, uncompressed); tests/http/test_webui.py holds it.
MAX_TOTAL_BYTES = 60 * 1024


@dataclass(frozen=True, kw_only=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """The page's files from the installed package, by name."""
    root = resources.files("corolla") / "webui"
    out = {}
    for name, media_type in FILES.items():
        body = (root / name).read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:32]
        out[name] = Asset(body=body, gzipped=gzip.compress(body, 9, mtime=0),
                          media_type=media_type, etag=f'"{digest}"')
    return out


def _accepts_gzip(request: Request) -> bool:
    accept = request.headers.get("accept-encoding", "")
    for part in accept.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _answer(request: Request, asset: Asset) -> Response:
    headers = {**SECURITY_HEADERS, "etag": asset.etag, "cache-control": "no-cache",
               "vary": "accept-encoding"}
    match = request.headers.get("if-none-match")
    if match is not None and asset.etag in (t.strip().removeprefix("W/")
                                           for t in match.split(",")):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if _accepts_gzip(request):
        body = asset.gzipped
        headers["content-encoding"] = "gzip"
    return Response(body, media_type=asset.media_type, headers=headers)


def webui_routes() -> list[Route]:
    """``GET /`` (the page) and ``GET /ui/<file>`` (its script, style sheet and icon): exact
    paths in the route table, no API (``api=None``) and no model, so no parameter either."""
    get = frozenset({"GET"})

    def serve(asset: Asset) -> Handler:
        async def handler(request: Request) -> Response:
            return _answer(request, asset)

        return handler

    return [Route(api=None, path=PAGE_PATH if name == PAGE_FILE else ASSET_PREFIX + name,
                  methods=get, handler=serve(asset))
            for name, asset in load_assets().items()]
