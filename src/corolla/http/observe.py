"""Outermost REST middleware: request id, request metrics, access log, draining.

Pure ASGI (no BaseHTTPMiddleware): per request it matches the request once against the route
table (corolla.http.routes; the match, with the API and the model, is stored in
``scope["corolla.route"]`` for the middlewares and the router inside it), sets the request id
(``X-Request-ID`` from the client when it is sane, else a new one) in the logging context and on
the response, records TF Serving's request_count/request_latency for inference calls, writes one
access-log record, and, once the server is draining, answers with ``Connection: close`` so that
clients stop reusing connections before the listener closes.

The status label of a request is the canonical code that produced its response: whoever answers
with an error stores it in ``scope["corolla.code"]`` (the REST error handler, auth, limits);
otherwise it is derived from the HTTP status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corolla.http.routes import RouteTable, match_once
from corolla.logging_setup import REQUEST_ID, RequestIds
from corolla.metrics import UNKNOWN_MODEL, Metrics

access_log = logging.getLogger("corolla.access")

INFERENCE_APIS = frozenset({"Predict", "Classify", "Regress", "ModelInfer"})

# HTTP status -> canonical code name, for responses that did not say which code they carry.
_STATUS_CODE = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip


def status_name(http_status: int) -> str:
    if 200 <= http_status < 400:
        return "OK"
    return _STATUS_CODE.get(http_status, "UNKNOWN" if http_status < 500 else "INTERNAL")


class ObserveMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        table: RouteTable,
        metrics: Metrics | None,
        known_model: Callable[[str], bool],
        draining: Callable[[], bool],
        access_log_enabled: bool = False,
    ) -> None:
        self.app = app
        self.table = table
        self.metrics = metrics
        self.known_model = known_model
        self.draining = draining
        self.access_log = access_log_enabled
        self.ids = RequestIds()

    def _request_id(self, headers: list[tuple[bytes, bytes]]) -> str:
        for name, value in headers:
            if name == b"x-request-id":
                return self.ids.accept(value)
        return self.ids.new()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = self._request_id(scope["headers"])
        token = REQUEST_ID.set(rid)
        route = match_once(self.table, scope)
        rid_header = (b"x-request-id", rid.encode("ascii"))
        status = 500
        draining = self.draining

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append(rid_header)
                if draining():
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            code = scope.get("corolla.code") or status_name(status)
            model = ""
            api = route.api if route is not None else None
            if route is not None and route.model is not None:
                model = route.model if self.known_model(route.model) else UNKNOWN_MODEL
                if self.metrics is not None and api in INFERENCE_APIS:
                    self.metrics.observe_request(model, api, "REST", code, elapsed)
            if self.access_log:
                client = scope.get("client")
                access_log.info(
                    "%s %s %d %s %.2fms",
                    scope["method"],
                    scope["path"],
                    status,
                    code,
                    elapsed * 1e3,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "code": code,
                        "duration_ms": round(elapsed * 1e3, 3),
                        "client": f"{client[0]}:{client[1]}" if client else "",
                        "model": model,
                        "api": api or "",
                    },
                )
            REQUEST_ID.reset(token)
