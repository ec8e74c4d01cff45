"""The error table and the REST error boundary (corolla.errors, corolla.http.app)."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.routing import Route

from corolla import errors
from corolla.errors import Code, CorollaError
from corolla.http.app import build_app

# DESIGN.md: TF Serving's own mapping.
TABLE = [
    (Code.INVALID_ARGUMENT, errors.InvalidArgument, 400),
    (Code.NOT_FOUND, errors.NotFound, 404),
    (Code.FAILED_PRECONDITION, errors.FailedPrecondition, 400),
    (Code.RESOURCE_EXHAUSTED, errors.ResourceExhausted, 429),
    (Code.UNAVAILABLE, errors.Unavailable, 503),
    (Code.DEADLINE_EXCEEDED, errors.DeadlineExceeded, 504),
    (Code.UNAUTHENTICATED, errors.Unauthenticated, 401),
    (Code.PERMISSION_DENIED, errors.PermissionDenied, 403),
    (Code.UNIMPLEMENTED, errors.Unimplemented, 501),
    (Code.INTERNAL, errors.Internal, 500),
    (Code.CANCELLED, errors.Cancelled, 499),
]


@pytest.mark.parametrize(("code", "cls", "status"), TABLE, ids=[c.name for c, _, _ in TABLE])
def test_table(code: Code, cls: type[CorollaError], status: int) -> None:
    assert errors.HTTP_STATUS[code] == status
    exc = cls("the message")
    assert exc.code is code
    assert exc.http_status == status
    assert exc.message == "the message"
    assert isinstance(exc, CorollaError)


def test_every_code_has_an_http_status() -> None:
    assert set(errors.HTTP_STATUS) == set(Code)
    assert errors.HTTP_STATUS[Code.OK] == 200


def test_codes_are_grpc_numbers() -> None:
    grpc = pytest.importorskip("grpc")
    for code in Code:
        assert grpc.StatusCode[code.name].value[0] == code.value


def test_code_override_and_empty_message() -> None:
    exc = CorollaError("x", Code.NOT_FOUND)
    assert exc.code is Code.NOT_FOUND and exc.http_status == 404
    assert CorollaError("y").code is Code.UNKNOWN
    # The class default is not changed by an instance override.
    assert errors.InvalidArgument("z", Code.INTERNAL).code is Code.INTERNAL
    assert errors.InvalidArgument("z").code is Code.INVALID_ARGUMENT


# ---- the REST boundary ------------------------------------------------------------------


async def _raise_corolla(request: Request) -> None:
    raise errors.ResourceExhausted("queue is full")


async def _raise_internal(request: Request) -> None:
    try:
        raise RuntimeError("secret detail")
    except RuntimeError as exc:
        raise errors.Internal("inference failed") from exc


async def _raise_foreign(request: Request) -> None:
    raise KeyError("secret_internal_name")


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = build_app([
        Route("/corolla", _raise_corolla),
        Route("/internal", _raise_internal),
        Route("/foreign", _raise_foreign),
    ])  # fmt: skip
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_corolla_error_becomes_json_with_its_status(client: httpx.AsyncClient) -> None:
    r = await client.get("/corolla")
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "queue is full"}


async def test_5xx_never_leaks_a_stack_trace(client: httpx.AsyncClient) -> None:
    r = await client.get("/internal")
    assert r.status_code == 500
    assert r.json() == {"error": "inference failed"}
    r = await client.get("/foreign")
    assert r.status_code == 500
    body = r.text
    assert "secret_internal_name" not in body and "Traceback" not in body
    assert set(r.json()) == {"error"}


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404
    assert "Malformed request" in r.json()["error"]
    r = await client.delete("/corolla")
    assert r.status_code == 405
    assert "DELETE" in r.json()["error"]
