"""REST authentication: API keys as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Pure ASGI middleware over :class:`corolla.auth.KeyStore`. No key or an unknown key: 401 with
``WWW-Authenticate: Bearer``; a key that may not call the model named in the URL: 403. Paths in
``open_paths`` (health, metrics, when configured open) and CORS preflight requests (which
browsers send without credentials) pass without a key. The model name comes from the request's
match in the route table (corolla.http.routes), the same match that the router dispatches on.
The key that passed is left in ``scope["corolla.api_key"]`` for handlers that answer about
several models (the V2 repository index lists only the models the key may call).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from corolla.auth import KeyStore, bearer_token
from corolla.errors import CorollaError
from corolla.http.limits import send_error
from corolla.http.routes import RouteTable, match_once


class AuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        store: KeyStore,
        *,
        table: RouteTable,
        open_paths: frozenset[str] = frozenset(),
        open_prefixes: tuple[str, ...] = (),
        open_apis: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.store = store
        self.table = table
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
        route = match_once(self.table, scope)
        if route is not None and route.api in self.open_apis:
            await self.app(scope, receive, send)
            return
        # The model of the request's route in the one table that also dispatches it: no route
        # answers without this check having seen its model (None: not a model's route).
        model = route.model if route is not None else None
        try:
            scope["corolla.api_key"] = self.store.authorize(
                bearer_token(authorization, api_key), model)
        except CorollaError as exc:
            scope["corolla.code"] = exc.code.name
            headers = (
                [(b"www-authenticate", b'Bearer realm="corolla"')] if exc.http_status == 401 else []
            )
            await send_error(send, exc.http_status, exc.message, headers)
            return
        await self.app(scope, receive, send)
