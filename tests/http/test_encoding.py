"""Reading request bodies for the REST handlers (corolla.http.encoding)."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request

from corolla.http.encoding import BodyTooLarge, read_body, request_body


def _request(messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]] | None = None
             ) -> Request:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or [],
             "query_string": b""}
    return Request(scope, receive)


async def test_a_body_in_several_messages_is_joined_in_order() -> None:
    req = _request([
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ])
    assert await read_body(req) == b"abcd"


async def test_an_empty_body() -> None:
    assert await read_body(_request([{"type": "http.request"}])) == b""


async def test_a_client_gone_mid_body_raises_client_disconnect() -> None:
    req = _request([
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    ])
    with pytest.raises(ClientDisconnect):
        await read_body(req)


async def test_request_body_inflates_per_content_encoding_and_caps_it() -> None:
    data = b"x" * 5000
    packed = gzip.compress(data)
    msgs = [{"type": "http.request", "body": packed[:10], "more_body": True},
            {"type": "http.request", "body": packed[10:], "more_body": False}]
    req = _request(list(msgs), [(b"content-type", b"application/json"),
                                (b"content-encoding", b"gzip")])
    assert await request_body(req) == data
    capped = _request(list(msgs), [(b"content-encoding", b"GZIP")])
    capped.scope["corolla.max_body"] = 100
    with pytest.raises(BodyTooLarge):
        await request_body(capped)
    plain = _request([{"type": "http.request", "body": b"{}"}])
    assert await request_body(plain) == b"{}"
