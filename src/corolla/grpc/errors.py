"""One error handler for every gRPC method, and request deadlines.

A :class:`CorollaError` ends the call with its code (the code's value is the gRPC status code) and
its message. Anything else is logged with its stack trace and answered INTERNAL without one.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from corolla.errors import Code, CorollaError

log = logging.getLogger("corolla.grpc")

_STATUS = {code: grpc.StatusCode[code.name] for code in Code}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def status_code(code: Code) -> grpc.StatusCode:
    return _STATUS[code]


def handle_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Wrap a unary servicer method: CorollaError -> its status; others -> INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except CorollaError as exc:
            if exc.code in (Code.INTERNAL, Code.UNKNOWN, Code.DATA_LOSS):
                log.error("%s -> %s: %s", method.__qualname__, exc.code.name, exc.message,
                          exc_info=exc.__cause__ is not None)
            await context.abort(_STATUS[exc.code], exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL,
                                "Internal error; the server log has the details")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


def deadline(context: grpc.aio.ServicerContext, default: float | None = None) -> float | None:
    """The call's deadline on time.monotonic()'s clock; ``default`` when the client set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None if default is None else time.monotonic() + default
    return time.monotonic() + remaining
