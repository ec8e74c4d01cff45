"""Outermost REST middleware: request id, request metrics, access log, draining.

Pure ASGI (no BaseHTTPMiddleware): per request it parses the path once (model name and API,
stored in ``scope["corolla.route"]`` for the middlewares inside it), sets the request id
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
import re
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corolla.logging_setup import REQUEST_ID, RequestIds
from corolla.metrics import UNKNOWN_MODEL, Metrics

access_log = logging.getLogger("corolla.access")

_V1 = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/[^/:]+|/labels/[^/:]+)?"
    r"(?::(?P<verb>predict|classify|regress)|(?P<meta>/metadata))?/?$"
)
_V2 = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?(?P<op>/infer|/ready)?/?$")
_V1_API = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}
INFERENCE_APIS = frozenset({"Predict", "Classify", "Regress", "ModelInfer"})

# HTTP status -> canonical code name, for responses that did not say which code they carry.
_STATUS_CODE = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip


def parse_route(path: str) -> tuple[str, str] | None:
    """(model name, API) of a model URL of TF Serving's or KServe V2's REST API, else None."""
    if path.startswith("/v1/models/"):
        m = _V1.match(path)
        if m is None:
            return None
        verb = m.group("verb")
        api = (
            _V1_API[verb] if verb else ("GetModelMetadata" if m.group("meta") else "GetModelStatus")
        )
        return m.group("name"), api
    if path.startswith("/v2/models/"):
        m = _V2.match(path)
        if m is None:
            return None
        op = m.group("op")
        api = "ModelInfer" if op == "/infer" else ("ModelReady" if op else "ModelMetadata")
        return m.group("name"), api
    return None


def status_name(http_status: int) -> str:
    if 200 <= http_status < 400:
        return "OK"
    return _STATUS_CODE.get(http_status, "UNKNOWN" if http_status < 500 else "INTERNAL")


class ObserveMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics | None,
        known_model: Callable[[str], bool],
        draining: Callable[[], bool],
        access_log_enabled: bool = False,
    ) -> None:
        self.app = app
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
        route = parse_route(scope["path"])
        scope["corolla.route"] = route
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
            if route is not None:
                model = route[0] if self.known_model(route[0]) else UNKNOWN_MODEL
                if self.metrics is not None and route[1] in INFERENCE_APIS:
                    self.metrics.observe_request(model, route[1], "REST", code, elapsed)
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
                        "api": route[1] if route else "",
                    },
                )
            REQUEST_ID.reset(token)
