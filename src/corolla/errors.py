"""One error space for every protocol.

Every failure that reaches a client is a :class:`CorollaError` carrying a canonical status
code (gRPC's names). One table maps codes to HTTP statuses (TensorFlow Serving's own mapping);
gRPC frontends use the code itself. Foreign exceptions are translated where they arise with
``raise CorollaError(...) from exc``.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """Canonical status codes; values are the gRPC numeric codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TensorFlow Serving's REST mapping (tensorflow_serving/model_servers/http_rest_api_handler
# uses ToHTTPStatusCode); Corolla answers FAILED_PRECONDITION with 400 as TF Serving does.
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class CorollaError(Exception):
    """An error with a canonical code; its message is safe to show to clients."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


class InvalidArgument(CorollaError):
    code = Code.INVALID_ARGUMENT


class NotFound(CorollaError):
    code = Code.NOT_FOUND


class FailedPrecondition(CorollaError):
    code = Code.FAILED_PRECONDITION


class ResourceExhausted(CorollaError):
    code = Code.RESOURCE_EXHAUSTED


class Unavailable(CorollaError):
    code = Code.UNAVAILABLE


class DeadlineExceeded(CorollaError):
    code = Code.DEADLINE_EXCEEDED


class Unauthenticated(CorollaError):
    code = Code.UNAUTHENTICATED


class PermissionDenied(CorollaError):
    code = Code.PERMISSION_DENIED


class Unimplemented(CorollaError):
    code = Code.UNIMPLEMENTED


class Internal(CorollaError):
    code = Code.INTERNAL


class Cancelled(CorollaError):
    code = Code.CANCELLED


class DataLoss(CorollaError):
    """Stored bytes do not match what their manifest promises (corrupt or half-written)."""

    code = Code.DATA_LOSS
