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


async def test_a_gzip_body_under_a_memory_budget_smaller_than_the_body_limit() -> None:
    # Inflating took min(body limit, whole budget) beside the compressed body the request
    # already held: more than the budget, so every gzip body waited and got 503 whenever the
    # budget was at most --max_request_body_bytes (found from outside with curl, 16 MiB).
    from corolla.admission import CURRENT, Ledger, MemoryBudget, TooLargeForBudget

    budget = MemoryBudget(64 * 1024, wait_seconds=60)
    data = b"[" + b"0," * 20_000 + b"0]"
    packed = gzip.compress(data)
    headers = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
    for body, fits in ((data, True), (data * 4, False)):
        packed = gzip.compress(body)
        req = _request([{"type": "http.request", "body": packed}], headers)
        req.scope["corolla.max_body"] = 32 << 20
        ledger = Ledger(budget)
        await ledger.take(len(packed), "a request body")
        token = CURRENT.set(ledger)
        try:
            if fits:
                assert await request_body(req) == body
                assert ledger.held == len(packed) + len(body)
            else:
                with pytest.raises(TooLargeForBudget) as err:
                    await request_body(req)
                assert err.value.http_status == 413
                assert budget.stats.too_large == 1 and budget.stats.busy == 0
                assert ledger.held == len(packed)
        finally:
            CURRENT.reset(token)
            ledger.close()
    assert budget.in_use == 0


async def test_big_bodies_are_parsed_in_a_thread_one_at_a_time() -> None:
    import asyncio
    import threading
    import time

    from corolla.http.encoding import BIG_BODY_BYTES, BodyParser

    parse_body = BodyParser().parse

    loop_thread = threading.get_ident()
    running, most = 0, 0
    lock = threading.Lock()

    def parse(tag: int) -> tuple[int, int]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return tag, threading.get_ident()

    assert await parse_body(10, parse, 0) == (0, loop_thread)  # small: right here
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    t = asyncio.create_task(ticker())
    got = await asyncio.gather(*(parse_body(BIG_BODY_BYTES, parse, i) for i in range(3)))
    t.cancel()
    assert [tag for tag, _ in got] == [0, 1, 2]
    assert all(ident != loop_thread for _, ident in got)
    assert most == 1  # one big parse at a time
    assert ticks > 5  # the loop ran meanwhile
