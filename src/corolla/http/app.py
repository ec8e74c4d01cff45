"""The REST frontend's dispatch and its one error mapping.

:class:`Router` calls the handler of each request's route in the one route table
(corolla.http.routes); a path that no route takes goes to a fallback Starlette app
(:func:`build_app`, with any routes outside the table), which answers 404. Both map errors the
same way: they leave as ``{"error": "<message>"}`` with the status of corolla.errors.HTTP_STATUS;
anything unexpected is logged with its stack trace and answered 500 without one.

Profiling the tiny model (benchmarks/PROFILE.md) put a third of the server's per-request CPU in
Starlette's routing and its two exception middlewares: the router needs neither (the match was
made once, by the outermost middleware).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from corolla.errors import CorollaError
from corolla.http.routes import Route, RouteTable, match_once
from corolla.protocols import tfserving_rest as codec

log = logging.getLogger("corolla.http")


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(codec.dumps({"error": message}), status_code=status,
                    media_type="application/json", headers=headers)


async def _corolla_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CorollaError)
    request.scope["corolla.code"] = exc.code.name  # the status label of request metrics
    retry_after = getattr(exc, "retry_after", None)  # busy: when to try again (seconds)
    if exc.http_status >= 500 and retry_after is None:  # busy is not a fault
        log.error("%s %s -> %s: %s", request.method, request.url.path, exc.code.name,
                  exc.message, exc_info=exc.__cause__ is not None)
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return error_response(exc.message, exc.http_status, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(f"Malformed request: {request.method} {request.url.path}", 404)
    if exc.status_code == 405:
        return error_response(
            f"Method {request.method} is not allowed on {request.url.path}", 405,
            headers=dict(exc.headers or {}))
    return error_response(str(exc.detail), exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response("Internal error; the server log has the details", 500)


def build_app(routes: Sequence[BaseRoute], middleware: Sequence[Middleware] = ()) -> Starlette:
    app = Starlette(
        routes=list(routes),
        middleware=list(middleware),
        exception_handlers={
            CorollaError: _corolla_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    # A path that no route takes is answered 404 as TF Serving does, not redirected to the
    # same path with a slash added (``/v1/models`` -> ``/v1/models/``, which is a 404 too).
    app.router.redirect_slashes = False
    return app


class Router:
    """ASGI app: the request's route's handler (405 for a method its path does not take),
    or ``fallback`` for a path that no route in ``table`` takes."""

    def __init__(self, table: RouteTable, fallback: ASGIApp) -> None:
        self.table = table
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = match_once(self.table, scope) if scope["type"] == "http" else None
        if match is None:
            await self.fallback(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            if match.allowed:
                raise HTTPException(405, headers={"Allow": ", ".join(match.allowed)})
            scope["path_params"] = match.params
            response = await match.route.handler(request)
        except CorollaError as exc:
            response = await _corolla_error(request, exc)
        except HTTPException as exc:
            response = await _http_error(request, exc)
        except MultiPartException as exc:
            # Starlette raises this bare outside its app; its app answers 400 with the
            # parser's message, and so does this.
            response = await _http_error(request, HTTPException(400, detail=exc.message))
        except ClientDisconnect:
            scope["corolla.code"] = "CANCELLED"
            return  # nobody to answer
        except Exception as exc:  # answered 500, logged with its trace
            response = await _unexpected(request, exc)
        await response(scope, receive, send)


def route_app(routes: Sequence[Route], other: Sequence[BaseRoute] = ()) -> Router:
    """A router over ``routes``, with a fallback app for ``other`` Starlette routes (tests, and
    apps without the server's middlewares)."""
    return Router(RouteTable(routes), build_app(other))
