"""REST limits: request body size (413), header size (431), concurrent requests (429), slow
clients (408/close).

:class:`LimitsMiddleware` is pure ASGI. A declared ``Content-Length`` above the limit is refused
before any of the body is read; a chunked body is counted as the application reads it and the
read that crosses the limit raises HTTP 413 (answered by the app's error handler). Requests
beyond ``max_concurrent_requests`` (REST and gRPC together) are answered 429 at once; health and
metrics paths are never limited.

Slow clients (slowloris): uvicorn bounds idle keep-alive connections but not a request whose
headers or body trickle in, nor a connection that never sends anything. :func:`guarded_protocol`
subclasses uvicorn's httptools protocol with two deadlines per request: the headers must be
complete within ``header_timeout`` of the connection opening (or of the first byte of the next
request on a keep-alive connection), and the body within ``body_timeout`` of the headers. A
connection that misses one gets a 408 (when no response has started) and is closed; the
application sees a disconnect. The timers live on the event loop: two ``call_later`` per request.

Nor does httptools bound the size of request headers: it buffers a header until it ends, so one
connection could make the server hold gigabytes (measured: two requests with a 500 MB header
each took the process from 0.76 to 1.76 GB). The same protocol counts the bytes that arrive
while a request's headers are incomplete, and measures the headers once they are complete (they
may arrive in one read), and answers 431 (and closes) past ``max_header_bytes``.
Requests the parser rejects get a JSON 400 instead of uvicorn's plain-text one, after the answers
to any complete requests pipelined before them on the connection (uvicorn closes at once).

Connection reuse: a keep-alive connection is answered ``Connection: close`` after
``max_requests_per_connection`` requests or once it is ``max_connection_age`` seconds old, so
that long-lived clients reconnect and the kernel spreads their connections over the processes
again (a worker restarted by ``--rest_workers``' watchdog gets clients back). At shutdown, a
connection between requests (accepted while the listener drained, corolla.listeners, or idle on
keep-alive) has a request that arrives within ``FIRST_REQUEST_WAIT`` answered, then closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from corolla.admission import CURRENT, Ledger, MemoryBudget, parse_allowance
from corolla.errors import CorollaError
from corolla.http.coalesce import CoalescingWriter, DueWrites
from corolla.metrics import Inflight

log = logging.getLogger("corolla.limits")

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_REQUESTS_PER_CONNECTION = 1000  # nginx's keepalive_requests
DEFAULT_MAX_CONNECTION_AGE = 300.0
# At shutdown, a connection between requests (accepted while the listener drained, or an idle
# keep-alive one) gets this long to send a request; it is answered, then closed.
FIRST_REQUEST_WAIT = 2.0


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # 0: unlimited
    max_concurrent_requests: int = 0  # REST + gRPC; 0: unlimited
    header_timeout: float = 15.0  # 0: none
    body_timeout: float = 120.0  # 0: none
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES  # request line + headers; 0: unlimited
    # Keep-alive connections close after this many requests, or after a request that starts
    # this many seconds after the connection opened (0: never), so that clients reconnect and
    # new connections spread over the processes again (--rest_workers). gRPC uses the age.
    max_requests_per_connection: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION
    max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE


def add_flags(group: argparse._ArgumentGroup) -> None:
    """``corolla serve``'s flags for :class:`HttpLimits`."""
    add = group.add_argument
    add("--max_request_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
        help="larger REST bodies are refused with 413 (0: no limit)")
    add("--max_concurrent_requests", type=int, default=0,
        help="REST + gRPC requests served at once; beyond: 429 / RESOURCE_EXHAUSTED (0: no "
             "limit)")
    add("--http_header_timeout_seconds", type=float, default=15.0,
        help="close connections whose request headers take longer (slowloris)")
    add("--http_body_timeout_seconds", type=float, default=120.0,
        help="close connections whose request body takes longer to arrive")
    add("--http_max_header_bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES,
        help="larger REST request headers (request line included) are refused with 431 and "
             "the connection closed (0: no limit)")
    add("--http_max_requests_per_connection", type=int,
        default=DEFAULT_MAX_REQUESTS_PER_CONNECTION,
        help="a keep-alive connection closes after this many requests, so that clients "
             f"reconnect (and spread over --rest_workers); 0: never (default "
             f"{DEFAULT_MAX_REQUESTS_PER_CONNECTION})")
    add("--max_connection_age_seconds", type=float, default=DEFAULT_MAX_CONNECTION_AGE,
        help="REST keep-alive connections close, and gRPC connections get GOAWAY, once this "
             f"old; 0: never (default {DEFAULT_MAX_CONNECTION_AGE:g})")


def limits_from_flags(args: argparse.Namespace) -> HttpLimits:
    return HttpLimits(max_body_bytes=args.max_request_body_bytes,
                      max_concurrent_requests=args.max_concurrent_requests,
                      header_timeout=args.http_header_timeout_seconds,
                      body_timeout=args.http_body_timeout_seconds,
                      max_header_bytes=args.http_max_header_bytes,
                      max_requests_per_connection=args.http_max_requests_per_connection,
                      max_connection_age=args.max_connection_age_seconds)


async def send_error(
    send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A complete ``{"error": message}`` JSON response from pure ASGI code."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        limits: HttpLimits,
        inflight: Inflight,
        exempt_paths: frozenset[str] = frozenset(),
        memory: MemoryBudget | None = None,
    ) -> None:
        self.app = app
        self.max_body = limits.max_body_bytes
        self.max_concurrent = limits.max_concurrent_requests
        self.inflight = inflight
        self.exempt = exempt_paths
        self.memory = memory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        inflight = self.inflight
        if self.max_concurrent and inflight.total >= self.max_concurrent:
            scope["corolla.code"] = "RESOURCE_EXHAUSTED"
            await send_error(
                send,
                429,
                f"Too many concurrent requests (the limit is {self.max_concurrent}); retry later",
            )
            return
        max_body = self.max_body
        memory = self.memory
        length = None
        json_body = True  # no Content-Type: the REST APIs read the body as JSON
        json_part = None  # KServe V2 binary tensors: only the first bytes are JSON
        if max_body or memory is not None:
            for name, value in scope["headers"]:
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        length = -1
                elif name == b"content-type":
                    json_body = not value.startswith((b"image/", b"multipart/",
                                                      b"application/octet-stream"))
                elif name == b"inference-header-content-length":
                    try:
                        json_part = max(0, int(value))
                    except ValueError:
                        json_part = None  # the V2 handler answers 400
        if max_body:
            scope["corolla.max_body"] = max_body  # also caps inflated bodies (http/encoding.py)
            if length is not None and length > max_body:
                scope["corolla.code"] = "RESOURCE_EXHAUSTED"
                await send_error(
                    send,
                    413,
                    f"Request body of {length} bytes exceeds the limit of {max_body} bytes",
                    headers=[(b"connection", b"close")],
                )
                return
        ledger = None
        if memory is not None:
            ledger = Ledger(memory)
            if length is not None and length > 0:
                # The body is read only once its bytes are granted (uvicorn stops reading a
                # connection while 64 KiB of its body wait for the application); a JSON body
                # takes what its parse needs at the same time, so that no request holds its
                # body while it waits for the rest (see corolla.admission.parsing).
                # A V2 body with binary tensors: its JSON header is parsed, the tensors are
                # views of the body (an inflated body's parse is topped up when parsed).
                parse = (parse_allowance(memory, min(length, json_part if json_part is not None
                                                     else length))
                         if json_body else 0)
                try:
                    await ledger.take(length + parse, f"a request body of {length} bytes")
                except CorollaError as exc:
                    await _refuse(scope, send, exc)
                    return
                ledger.parsing = parse
        if length is None and scope["method"] in ("POST", "PUT", "PATCH") and (
                max_body or ledger is not None):
            receive = _counting_receive(receive, max_body, scope, ledger)
        token = CURRENT.set(ledger) if ledger is not None else None
        inflight.rest += 1
        try:
            await self.app(scope, receive, send)
        finally:
            inflight.rest -= 1
            if ledger is not None:
                ledger.close()
            if token is not None:
                CURRENT.reset(token)


async def _refuse(scope: Scope, send: Send, exc: CorollaError) -> None:
    """Answer a request refused for memory before its body was read (and close: the body is
    still on the connection)."""
    scope["corolla.code"] = exc.code.name
    headers = [(b"connection", b"close")]
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send_error(send, exc.http_status, exc.message, headers=headers)


def _counting_receive(receive: Receive, limit: int, scope: Scope,
                      ledger: Ledger | None = None) -> Receive:
    """A body of unknown length (chunked): counted against the body limit as it is read, and
    its bytes taken from the memory budget chunk by chunk."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            n = len(message.get("body", b""))
            seen += n
            if limit and seen > limit:
                scope["corolla.code"] = "RESOURCE_EXHAUSTED"
                raise HTTPException(413, f"Request body exceeds the limit of {limit} bytes")
            if ledger is not None:
                await ledger.take(n, "a request body")
        return message

    return counted


def _error_response(status: bytes, message: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, with a JSON error body."""
    body = json.dumps({"error": message}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


_408_RESPONSE = _error_response(b"408 Request Timeout",
                                "Request timeout: the client sent the request too slowly")


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request already answered 431."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines and a header size limit
    (see module docstring)."""

    header_timeout: float = 15.0
    body_timeout: float = 120.0
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    due_writes: DueWrites  # the server's, set by guarded_protocol
    max_requests: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION  # 0: any number
    max_age: float = DEFAULT_MAX_CONNECTION_AGE  # 0: any age
    _requests = 0  # requests begun on this connection
    _opened = 0.0  # loop time
    _header_bytes = 0  # bytes of the current request's unfinished headers (about)
    _body_fed = 0  # body bytes the parser has passed on, to tell them from header bytes

    _guard: asyncio.TimerHandle | None = None
    _in_headers = False
    _begun = False  # bytes of the current request have arrived
    _last_request = False  # shutdown: answer the request being received, then close
    # What the deadline should cover now ("headers", "body" or "": nothing) and what the armed
    # timer covers. Parser callbacks only set ``_phase``; the timer follows once the received
    # bytes are parsed, so a request that arrives whole (the usual case) arms no timer at all.
    _phase = ""
    _armed = ""
    # A request refused (400 unparseable, 431 headers too large) while earlier (pipelined)
    # requests on the connection were still being answered: its whole error response goes out,
    # and the connection closes, after their answers.
    _deferred: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Everything this connection writes (responses, 408s, uvicorn's own errors) goes
        # through one writer, in order; a response's head and body leave in one write.
        self.transport = CoalescingWriter(  # type: ignore[assignment]
            transport, self.loop, self.due_writes)
        self._in_headers = True
        self._phase = "headers"
        self._opened = self.loop.time()
        self._apply()

    def data_received(self, data: bytes) -> None:
        if self._deferred is not None:
            return  # the connection ends after the answers it owes; nothing more is read
        body_before = self._body_fed
        super().data_received(data)
        if self._in_headers and self.max_header_bytes:
            # Headers still incomplete: what arrived is theirs, less any body of a previous
            # (pipelined) request that the same read completed.
            self._header_bytes += len(data) - (self._body_fed - body_before)
            if self._header_bytes > self.max_header_bytes:
                self._headers_too_large()
                return
        self._apply()

    def on_body(self, body: bytes) -> None:
        self._body_fed += len(body)
        super().on_body(body)

    def send_400_response(self, msg: str) -> None:
        """The parser refused the request: a JSON error body, as every other error has. Complete
        requests received before it on the same connection (pipelined) are answered first."""
        if self._deferred is not None or self.transport.is_closing():
            return  # already answered (431), now or after the answers owed
        cycle = self.cycle
        # Deferred only when the bad bytes follow complete requests; bad bytes inside the body
        # of the request being received fail that request now, as before.
        in_body = cycle is not None and cycle.more_body and not cycle.response_complete
        if not in_body and (self.pipeline or (cycle is not None
                                              and not cycle.response_complete)):
            self._deferred = _error_response(b"400 Bad Request", msg)
            self._disarm()  # nothing more is read: no header deadline for the answers owed
            return
        self.transport.write(_error_response(b"400 Bad Request", msg))
        self.transport.close()

    def _headers_too_large(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self._deferred is not None:
            return
        log.info("closing a connection from %s: request headers over %d bytes",
                 f"{self.client[0]}:{self.client[1]}" if self.client else "?",
                 self.max_header_bytes)
        self._disarm()
        response = _error_response(
            b"431 Request Header Fields Too Large",
            f"Request headers exceed the limit of {self.max_header_bytes} bytes")
        cycle = self.cycle
        if self.pipeline or (cycle is not None and not cycle.response_complete):
            self._deferred = response  # after the answers to the requests before it
            return
        transport.write(response)
        transport.close()

    def _apply(self) -> None:
        if self._phase == self._armed:
            return
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        timeout = {"headers": self.header_timeout, "body": self.body_timeout}.get(self._phase, 0)
        if timeout > 0:
            self._guard = self.loop.call_later(timeout, self._expired)
        self._armed = self._phase

    def _disarm(self) -> None:
        self._phase = ""
        self._apply()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = True
        self._requests += 1
        if not self._in_headers:  # the next request on a keep-alive connection
            self._in_headers = True
            self._phase = "headers"

    def on_headers_complete(self) -> None:
        self._in_headers = self._begun = False
        self._header_bytes = 0
        self._phase = "body"
        limit = self.max_header_bytes
        # Headers that arrive in one read (up to 256 KiB) complete before data_received counts
        # them: measure what the parser gathered (the request line's URL and each header).
        if limit and len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) > limit:
            self._headers_too_large()
            raise _HeadersTooLarge  # stops the parser: nothing of this request reaches the app
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and (
                self._last_request
                or (self.max_requests and self._requests >= self.max_requests)
                or (self.max_age and self.loop.time() - self._opened >= self.max_age)):
            # Connection: close after this answer: shutting down, or the connection is old
            # enough to rebalance. (While draining, ObserveMiddleware closes every answer's.)
            cycle.keep_alive = False

    def shutdown(self) -> None:
        """Graceful shutdown: a request whose first bytes have arrived is still answered, and
        so is one that arrives within FIRST_REQUEST_WAIT on a connection between requests (a
        connection accepted while the listener drained, whose client is sending its request;
        a keep-alive client sending its next one): closing such a connection at once would
        reset a request the client has already sent. Each is answered ``Connection: close``."""
        if (self.cycle is None or self.cycle.response_complete) and not self.pipeline:
            self._last_request = True  # bounded by the header timeout
            if not self._begun:
                self.loop.call_later(FIRST_REQUEST_WAIT, self._close_if_idle, self._requests)
            return
        super().shutdown()

    def _close_if_idle(self, requests: int) -> None:
        """FIRST_REQUEST_WAIT after shutdown: close the connection if no request came."""
        if self._requests == requests and not self._begun and self.transport is not None:
            self._disarm()
            self.transport.close()

    def on_message_complete(self) -> None:
        self._phase = ""
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if not self._in_headers:
            self._disarm()
        super().on_response_complete()
        deferred = self._deferred
        if deferred is not None and not self.pipeline and (
                self.cycle is None or self.cycle.response_complete):
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None
            self.transport.write(deferred)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _expired(self) -> None:
        self._guard = None
        self._armed = self._phase = ""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        cycle = self.cycle
        if self._in_headers:
            # A previous response may still be going out (pipelining): then just close.
            may_answer = cycle is None or cycle.response_complete
        else:
            may_answer = cycle is not None and not cycle.response_started
        if may_answer:
            transport.write(_408_RESPONSE)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() now reports a disconnect
            cycle.message_event.set()
        log.info(
            "closing a connection from %s: %s not received in time",
            f"{self.client[0]}:{self.client[1]}" if self.client else "?",
            "request headers" if self._in_headers else "request body",
        )
        transport.close()


def guarded_protocol(limits: HttpLimits, *, due_writes: DueWrites) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with ``limits``' deadlines, header
    limit and connection reuse; ``due_writes``: the server's (its answers held for the end of
    a loop iteration)."""
    attrs: dict[str, object] = {
        "header_timeout": limits.header_timeout, "body_timeout": limits.body_timeout,
        "max_header_bytes": limits.max_header_bytes, "due_writes": due_writes,
        "max_requests": limits.max_requests_per_connection,
        "max_age": limits.max_connection_age}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), attrs)
