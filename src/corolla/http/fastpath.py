"""The inference fast path: POST ``:predict`` and V2 ``/infer`` without Starlette's router.

Profiling the tiny model (benchmarks/PROFILE.md) put a third of the server's per-request CPU in
Starlette's routing and its two exception middlewares. Inference calls are the hot path and
their URLs are already parsed by ObserveMiddleware (``scope["corolla.route"]``), so this ASGI
app sends them straight to their handlers, with the same error mapping as the Starlette app's
handlers (the same functions), and passes everything else to the Starlette app unchanged.
Responses, status codes and error bodies are therefore identical on both paths.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from corolla.errors import CorollaError
from corolla.http.app import _corolla_error, _http_error, _unexpected
from corolla.http.observe import parse_route

log = logging.getLogger("corolla.http")

Handler = Callable[[Request], Awaitable[Response]]

_V2_INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")


class FastInference:
    """ASGI app: inference POSTs go to ``predict``/``infer`` directly, the rest to ``app``."""

    def __init__(self, app: ASGIApp, *, v1: Handler | None, v2_infer: Handler | None) -> None:
        self.app = app
        self.v1 = v1
        self.v2_infer = v2_infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._route(scope) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except CorollaError as exc:
            response = await _corolla_error(request, exc)
        except HTTPException as exc:
            response = await _http_error(request, exc)
        except MultiPartException as exc:
            # Starlette raises this bare when the request is not inside its app; its app would
            # have answered 400 with the parser's message, so answer the same.
            response = await _http_error(request, HTTPException(400, detail=exc.message))
        except ClientDisconnect:
            scope["corolla.code"] = "CANCELLED"
            return  # nobody to answer
        except Exception as exc:  # answered 500, logged with its trace
            response = await _unexpected(request, exc)
        await response(scope, receive, send)

    def _route(self, scope: Scope) -> Handler | None:
        if scope["method"] != "POST":
            return None
        route = scope.get("corolla.route")
        if route is None and "corolla.route" not in scope:
            route = parse_route(scope["path"])
        if route is None:
            return None
        api = route[1]
        if api == "Predict" and self.v1 is not None:
            return self.v1
        if api == "ModelInfer" and self.v2_infer is not None:
            m = _V2_INFER.match(scope["path"])
            if m is None:
                return None
            params = {"name": m.group("name")}
            if m.group("version") is not None:
                params["version"] = m.group("version")
            scope["path_params"] = params
            return self.v2_infer
        return None
