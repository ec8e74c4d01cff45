"""REST authentication: API keys as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Pure ASGI middleware over :class:`corolla.auth.KeyStore`. No key or an unknown key: 401 with
``WWW-Authenticate: Bearer``; a key that may not call the model named in the URL: 403. Paths in
``open_paths`` (health, metrics, when configured open) and CORS preflight requests (which
browsers send without credentials) pass without a key. The model name comes from the route that
the outer middleware parsed (``scope["corolla.route"]``).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from corolla.auth import KeyStore, bearer_token
from corolla.errors import CorollaError
from corolla.http.limits import send_error
from corolla.http.observe import parse_route

_MISSING = object()


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        store: KeyStore,
        *,
        open_paths: frozenset[str] = frozenset(),
        open_prefixes: tuple[str, ...] = (),
        open_apis: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.store = store
        self.open_paths = open_paths
        self.open_prefixes = open_prefixes
        self.open_apis = open_apis  # e.g. {"ModelReady"}: KServe V2 per-model readiness

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or (
            bool(self.open_prefixes) and path.startswith(self.open_prefixes)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = api_key = None
        preflight = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"access-control-request-method":
                preflight = True
        if preflight and scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        route = scope.get("corolla.route", _MISSING)
        if route is _MISSING:
            route = parse_route(scope["path"])
        if route is not None and route[1] in self.open_apis:
            await self.app(scope, receive, send)
            return
        model = route[0] if route else None
        try:
            self.store.authorize(bearer_token(authorization, api_key), model)
        except CorollaError as exc:
            scope["corolla.code"] = exc.code.name
            headers = (
                [(b"www-authenticate", b'Bearer realm="corolla"')] if exc.http_status == 401 else []
            )
            await send_error(send, exc.http_status, exc.message, headers)
            return
        await self.app(scope, receive, send)
