"""The web page's routes in process (ASGI transport): GET / and /ui/*, their security headers,
the size budget, the flag that turns them off, auth, and the V2 repository index they list
models with."""

from __future__ import annotations

import gzip
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from corolla.cli import build_parser
from corolla.config import ModelConfig, VersionPolicy
from corolla.http import webui
from corolla.repository.manager import ManagerOptions
from corolla.runtimes.fake import write_fake_version
from corolla.serve_options import build_server_options
from corolla.server import CorollaServer, ServerOptions

Make = Callable[..., Awaitable[httpx.AsyncClient]]
ASSETS = ("/ui/app.js", "/ui/app.css", "/ui/icon.svg")


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    """An in-process server with models "a" (fake, version 1), "b" (versions 1 and 2, both
    served), "broken" (its version fails to load) and "empty" (no version yet); keyword
    arguments go to ServerOptions."""
    write_fake_version(tmp_path / "a", 1, labels=["x", "y"])
    write_fake_version(tmp_path / "b", 1)
    write_fake_version(tmp_path / "b", 2)
    write_fake_version(tmp_path / "broken", 1, fail="broken weights")
    (tmp_path / "empty").mkdir()
    names = ("a", "b", "broken", "empty")
    servers: list[tuple[CorollaServer, httpx.AsyncClient]] = []

    async def factory(**kw: Any) -> httpx.AsyncClient:
        configs = tuple(
            ModelConfig(name=n, base_path=str(tmp_path / n),
                        version_policy=VersionPolicy(kind="all" if n == "b" else "latest"))
            for n in names)
        server = CorollaServer(ServerOptions(
            models=configs, enable_fake_runtime=True, grpc_port=-1,
            manager=ManagerOptions(max_load_retries=0), **kw))
        await server.manager.set_configs(list(configs))
        await server.manager.wait_until(
            lambda: all(server.manager.settled(n) for n in names), 10)
        app = server.rest_app()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://corolla")
        client.app = app  # type: ignore[attr-defined]
        servers.append((server, client))
        return client

    yield factory
    for server, client in servers:
        await client.aclose()
        await server.manager.close()
        for pool in (server.infer_pool, server.decode_pool, server.load_pool):
            pool.shutdown()


async def raw_get(client: httpx.AsyncClient, path: str) -> int:
    """The status of a GET of ``path`` exactly as written (httpx would remove dot segments)."""
    app = client.app  # type: ignore[attr-defined]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"corolla")], "client": ("127.0.0.1", 1),
             "server": ("corolla", 80)}
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


class _Refs(HTMLParser):
    """What an HTML document loads, and whether it has inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.refs += [v for k, v in a.items() if k in ("src", "href") and v]
        self.inline += [f"{tag} {k}" for k in a if k == "style" or k.startswith("on")]
        if tag == "style" or (tag == "script" and "src" not in a):
            self._in = tag

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(f"{self._in}: {data.strip()[:40]}")

    def handle_endtag(self, tag: str) -> None:
        self._in = None


def _csp(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


async def test_page_and_files_carry_a_strict_policy(make: Make) -> None:
    c = await make()
    page = await c.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    parser = _Refs()
    parser.feed(page.text)
    assert parser.inline == []  # everything the page runs or styles comes from /ui/
    assert set(parser.refs) == {"/ui/icon.svg", "/ui/app.css", "/ui/app.js", "#main"}
    types = {"/ui/app.js": "text/javascript", "/ui/app.css": "text/css",
             "/ui/icon.svg": "image/svg+xml"}
    for r in [page, *[await c.get(p) for p in ASSETS]]:
        assert r.status_code == 200, r.url
        h = r.headers
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
        assert h["x-frame-options"] == "DENY"
        csp = _csp(h["content-security-policy"])
        assert csp["default-src"] == ["'none'"]
        for directive in ("script-src", "style-src", "connect-src"):
            assert csp[directive] == ["'self'"], directive  # no inline, no eval, no CDN
        assert csp["img-src"] == ["'self'", "blob:"]  # previews of the photos picked
        assert csp["frame-ancestors"] == ["'none'"] and csp["form-action"] == ["'none'"]
        assert csp["base-uri"] == ["'none'"]
    for path, media in types.items():
        assert (await c.get(path)).headers["content-type"].startswith(media)
    # No absolute URL anywhere: the page works offline and calls only this server.
    for path in ("/", *ASSETS):
        text = (await c.get(path)).text
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path


async def test_flag_off_answers_404(make: Make) -> None:
    c = await make(web_ui=False)
    for path in ("/", *ASSETS):
        r = await c.get(path)
        assert r.status_code == 404 and "error" in r.json(), path
    assert (await c.get("/v1/models/a")).status_code == 200


def options(argv: list[str]) -> ServerOptions:
    opts = build_server_options(build_parser().parse_args(["serve", *argv]), {})
    assert isinstance(opts, ServerOptions)
    return opts


def test_flag_parses_like_the_other_boolean_flags() -> None:
    assert options([]).web_ui is True
    assert options(["--enable_web_ui=false"]).web_ui is False
    assert options(["--enable_web_ui", "false"]).web_ui is False
    assert options(["--enable_web_ui"]).web_ui is True


async def test_unknown_files_and_methods(make: Make) -> None:
    c = await make()
    for path in ("/ui/index.html", "/ui/nope.js", "/ui/", "/index.html"):
        r = await c.get(path)
        assert r.status_code == 404 and "error" in r.json(), path
    assert await raw_get(c, "/ui/../v1/models/a") == 404
    assert (await c.post("/")).status_code == 405
    head = await c.head("/")
    assert head.status_code == 200 and head.content == b""


async def test_etag_and_gzip(make: Make) -> None:
    c = await make()
    r = await c.get("/ui/app.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in r.headers and r.headers["cache-control"] == "no-cache"
    same = await c.get("/ui/app.js", headers={"if-none-match": r.headers["etag"]})
    assert same.status_code == 304 and same.content == b""
    assert "content-security-policy" in same.headers
    other = await c.get("/ui/app.js", headers={"if-none-match": '"stale"'})
    assert other.status_code == 200
    raw = await c.send(c.build_request("GET", "/ui/app.js",
                                       headers={"accept-encoding": "gzip"}), stream=True)
    body = b"".join([chunk async for chunk in raw.aiter_raw()])
    assert raw.headers["content-encoding"] == "gzip" and raw.headers["vary"] == "accept-encoding"
    assert gzip.decompress(body) == r.content and len(body) < len(r.content) / 2
    refused = await c.get("/ui/app.js", headers={"accept-encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_size_budget() -> None:
    """The whole page (every file, uncompressed) stays under 60 KB, and every file shipped in
    corolla/webui is one that the server serves."""
    root = resources.files("corolla") / "webui"
    shipped = {p.name: len(p.read_bytes()) for p in root.iterdir() if p.is_file()}
    assert set(shipped) == set(webui.FILES)
    total = sum(shipped.values())
    assert total <= webui.MAX_TOTAL_BYTES == 60 * 1024, shipped


async def test_page_needs_no_key_but_the_api_does(make: Make, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("all-key\nb-key b\n")
    c = await make(auth_keys_file=str(keys))
    for path in ("/", *ASSETS):
        assert (await c.get(path)).status_code == 200, path
    # Only exact paths are open: nothing else under /ui/ passes without a key.
    for path in ("/ui/../v1/models/a", "/ui/x/../../metrics", "/ui/app.js/../../metrics"):
        assert await raw_get(c, path) == 401, path
    assert (await c.post("/v2/repository/index")).status_code == 401
    assert (await c.get("/metrics")).status_code == 401
    full = await c.post("/v2/repository/index", headers={"authorization": "Bearer all-key"})
    assert {e["name"] for e in full.json()} == {"a", "b", "broken", "empty"}
    # A key for some models lists only those.
    mine = await c.post("/v2/repository/index", headers={"x-api-key": "b-key"})
    assert [(e["name"], e["version"]) for e in mine.json()] == [("b", "2"), ("b", "1")]


def test_routes_are_no_api_and_name_no_model() -> None:
    """In the route table the page's routes are what they are: no API (so no request metrics,
    no API document entry) and no model (so no key scope applies); the index is an API."""
    server = CorollaServer(ServerOptions(grpc_port=-1))
    off = CorollaServer(ServerOptions(grpc_port=-1, web_ui=False))
    try:
        routes = {r.path: r for r in server.rest_routes()}
        for path in ("/", *ASSETS):
            assert routes[path].api is None and not routes[path].model_scoped, path
        assert set(webui.OPEN_PATHS) == {"/", *ASSETS}
        assert routes["/v2/repository/index"].api == "RepositoryIndex"
        assert not {"/", *ASSETS} & {r.path for r in off.rest_routes()}
    finally:
        for s in (server, off):
            for pool in (s.infer_pool, s.decode_pool, s.load_pool):
                pool.shutdown()


async def test_repository_index(make: Make) -> None:
    c = await make()
    index = (await c.post("/v2/repository/index")).json()
    assert index[:4] == [
        {"name": "a", "version": "1", "state": "READY", "reason": ""},
        {"name": "b", "version": "2", "state": "READY", "reason": ""},
        {"name": "b", "version": "1", "state": "READY", "reason": ""},
        {"name": "broken", "version": "1", "state": "UNAVAILABLE",
         "reason": index[3]["reason"]},
    ]
    assert "broken weights" in index[3]["reason"]
    (empty,) = index[4:]
    assert empty["name"] == "empty" and empty["state"] == "UNAVAILABLE" and empty["reason"]
    assert "version" not in empty, empty
    ready = (await c.post("/v2/repository/index", json={"ready": True})).json()
    assert [(e["name"], e["version"]) for e in ready] == [("a", "1"), ("b", "2"), ("b", "1")]
    assert (await c.post("/v2/repository/index", json={})).json() == index
    for bad in (b"[1]", b"{", b'{"ready": "yes"}'):
        r = await c.post("/v2/repository/index", content=bad)
        assert r.status_code == 400 and r.json()["error"], bad
    assert (await c.get("/v2/repository/index")).status_code == 405


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_colours_meet_wcag_aa_contrast() -> None:
    """Text pairs of the page's palette reach 4.5:1, the focus ring 3:1 (WCAG 2.1 AA), in the
    light and the dark scheme."""
    css = (resources.files("corolla") / "webui" / "app.css").read_text()
    light = css[:css.index("@media (prefers-color-scheme: dark)")]
    dark = css[css.index("@media (prefers-color-scheme: dark)"):]
    text_pairs = [("text", "bg"), ("text", "panel"), ("muted", "panel"), ("muted", "bg"),
                  ("muted", "track"), ("accent", "panel"), ("accent-text", "accent"),
                  ("error", "panel"), ("ok", "panel"), ("text", "track")]
    for scheme in (light, dark):
        palette = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", scheme))
        assert len(palette) >= 11, palette
        for fg, bg in text_pairs:
            ratio = _contrast(palette[fg], palette[bg])
            assert ratio >= 4.5, (fg, bg, round(ratio, 2))
        for bg in ("panel", "bg"):
            assert _contrast(palette["focus"], palette[bg]) >= 3
