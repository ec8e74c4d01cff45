"""The REST frontend: one Starlette app, one error handler, the routes of each protocol.

Errors leave as ``{"error": "<message>"}`` with the status of corolla.errors.HTTP_STATUS;
anything unexpected is logged with its stack trace and answered 500 without one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from corolla.errors import CorollaError
from corolla.protocols import tfserving_rest as codec

log = logging.getLogger("corolla.http")


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(codec.dumps({"error": message}), status_code=status,
                    media_type="application/json", headers=headers)


async def _corolla_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CorollaError)
    request.scope["corolla.code"] = exc.code.name  # the status label of request metrics
    if exc.http_status >= 500:
        log.error("%s %s -> %s: %s", request.method, request.url.path, exc.code.name,
                  exc.message, exc_info=exc.__cause__ is not None)
    return error_response(exc.message, exc.http_status)


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
