"""Limits on a real server: 413, 504, 429 (REST and gRPC), slow clients, CORS preflight."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from corolla_harness import CorollaProcess
from ops_process import (
    fake_model,
    grpc_predict_request,
    predict_body,
    prediction_stub,
    serve,
)

pytestmark = pytest.mark.slow

CONFIG = (
    'model_config_list { config { name: "m" base_path: "m" } '
    'config { name: "slow" base_path: "slow" } }'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorollaProcess]:
    work = tmp_path_factory.mktemp("limits")
    fake_model(work / "m", 1)
    fake_model(work / "slow", 1, predict_seconds=1.0)
    (work / "models.config").write_text(CONFIG)
    with serve(
        [
            "--model_config_file=models.config",
            "--max_request_body_bytes=2000",
            "--rest_api_timeout_in_ms=400",
            "--max_concurrent_requests=3",
            "--http_header_timeout_seconds=1",
            "--http_body_timeout_seconds=1",
            "--rest_api_enable_cors_support",
            "--enable_batching=false",
        ],
        work,
        wait="/readyz",
    ) as s:
        yield s


def _raw(server: CorollaProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def test_413_before_reading_the_body(server: CorollaProcess) -> None:
    with server.client() as c:
        r = c.post("/v1/models/m:predict", json={"instances": [[1.0, 2.0, 3.0, 4.0]] * 200})
        assert r.status_code == 413
        assert re.fullmatch(
            r"Request body of \d+ bytes exceeds the limit of 2000 bytes", r.json()["error"]
        )
        r = c.post(
            "/v1/models/m:predict",
            content=iter([b'{"instances": [' + b"[1.0, 2.0, 3.0, 4.0]," * 200, b"[1, 2, 3, 4]]}"]),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]
        assert c.post("/v1/models/m:predict", json=predict_body()).status_code == 200


def test_504_when_the_deadline_passes(server: CorollaProcess) -> None:
    with server.client() as c:
        r = c.post("/v1/models/slow:predict", json=predict_body())
        assert r.status_code == 504 and "Deadline exceeded" in r.json()["error"]


def test_429_rest_and_resource_exhausted_grpc(server: CorollaProcess) -> None:
    # Three slow gRPC calls (with a longer deadline of their own) hold every slot.
    with grpc.insecure_channel(server.grpc_target) as ch, ThreadPoolExecutor(3) as pool:
        stub = prediction_stub(ch)
        held = [
            pool.submit(stub.Predict, grpc_predict_request("slow"), timeout=20) for _ in range(3)
        ]
        time.sleep(0.4)
        with server.client() as c:
            r = c.post("/v1/models/m:predict", json=predict_body())
            assert r.status_code == 429
            assert r.json()["error"].startswith("Too many concurrent requests")
            assert c.get("/readyz").status_code == 200  # health is never limited
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(grpc_predict_request("m"), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for f in held:
            f.result()
    with server.client() as c:
        assert c.post("/v1/models/m:predict", json=predict_body()).status_code == 200


def test_slowloris_does_not_block_others_and_is_cut_off(server: CorollaProcess) -> None:
    slow = [_raw(server) for _ in range(40)]
    idle = _raw(server)  # connects and never sends a byte
    stop = threading.Event()

    def trickle() -> None:  # one header byte per connection every 0.2 s
        for s in slow:
            s.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n")
        while not stop.is_set():
            for s in slow:
                with contextlib.suppress(OSError):
                    s.sendall(b"X")
            stop.wait(0.2)

    t = threading.Thread(target=trickle)
    t.start()
    try:
        start = time.monotonic()
        with server.client() as c:
            for _ in range(20):
                assert c.post("/v1/models/m:predict", json=predict_body()).status_code == 200
        assert time.monotonic() - start < 5
        for s in [*slow, idle]:
            s.settimeout(5)
            answer = _read_all(s)  # the server closes it after the header timeout
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert time.monotonic() - start < 8
    finally:
        stop.set()
        t.join()
        for s in [*slow, idle]:
            s.close()


def test_slow_body_is_cut_off(server: CorollaProcess) -> None:
    with _raw(server) as s:
        s.sendall(
            b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"inst'
        )
        start = time.monotonic()
        answer = _read_all(s)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert 0.5 < time.monotonic() - start < 5


def test_keep_alive_connection_survives_idle_time_between_requests(server: CorollaProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            assert r.status == 200 and r.read() == b'{"live": true}'
            # Longer than the header timeout, but between requests: the keep-alive timeout
            # applies, so the connection stays open.
            time.sleep(1.3)
        sock = conn.sock
        assert sock is not None
    finally:
        conn.close()


def test_cors_preflight(server: CorollaProcess) -> None:
    with server.client() as c:
        r = c.options(
            "/v1/models/m:predict",
            headers={
                "origin": "https://anywhere.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        assert "POST" in r.headers["access-control-allow-methods"]
        r = c.post(
            "/v1/models/m:predict",
            json=predict_body(),
            headers={"origin": "https://anywhere.example"},
        )
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_request_body_limit_flag_validation(tmp_path: Path) -> None:
    fake_model(tmp_path / "m", 1)
    with (
        serve(
            ["--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--max_request_body_bytes=0"],
            tmp_path,
            wait="/readyz",
        ) as s,
        s.client() as c,
    ):
        big = {"instances": [[1.0, 2.0, 3.0, 4.0]] * 4000}  # 0: no limit
        assert c.post("/v1/models/m:predict", json=big).status_code == 200


def test_pipelined_requests_are_answered_whole_and_in_order(server: CorollaProcess) -> None:
    """Responses go out through the coalescing writer (head and body in one write): requests
    pipelined in one packet get complete answers in order, and a ``connection: close`` request
    closes the connection after its answer."""
    body = b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}'
    good = (
        b"POST /v1/models/m:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    health = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    missing = b"GET /v1/models/nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    with contextlib.closing(_raw(server)) as s:
        s.sendall(good + health + good + missing)
        answer = _read_all(s)
    parts = answer.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"200", b"200", b"404"], answer
    for part in parts:
        head, _, rest = part.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        assert len(rest) == length, part
    assert b'"predictions"' in parts[0] and parts[1].endswith(b'{"live": true}')
    assert b'"predictions"' in parts[2]


def test_oversized_headers_get_431_and_the_connection_closes(server: CorollaProcess) -> None:
    """httptools buffers a header until it ends, so an unbounded one could make the server hold
    gigabytes: past the header limit (64 KiB by default) the answer is 431 with a JSON body and
    the connection closes, even when the headers arrive in many small reads."""
    with contextlib.closing(_raw(server)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(40):
                s.sendall(b"a" * 4096)
            s.sendall(b"\r\n\r\n")
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"error": "Request headers exceed the limit of 65536 bytes"' in answer
    # Headers under the limit, and a body well over it, are fine.
    with server.client() as c:
        r = c.get("/healthz", headers={"x-big": "a" * 30_000})
        assert r.status_code == 200


@pytest.mark.parametrize("size", [70_000, 100_000, 200_000])
def test_headers_over_the_limit_in_one_write_get_431(server: CorollaProcess, size: int) -> None:
    """Headers that arrive whole in one read complete before their bytes are counted as
    unfinished headers: 70-100 KB used to pass the 64 KiB limit (issue 22.4)."""
    with server.client() as c:
        assert c.get("/healthz", headers={"x-big": "a" * size}).status_code == 431
        many = {f"x-h{i}": "b" * 40 for i in range(size // 48)}  # many small headers
        assert c.get("/healthz", headers=many).status_code == 431
        assert c.get("/healthz", headers={"x-big": "a" * 60_000}).status_code == 200


def test_a_pipelined_request_over_the_header_limit(server: CorollaProcess) -> None:
    health = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    big = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 80_000 + b"\r\n\r\n"
    with contextlib.closing(_raw(server)) as s:
        with contextlib.suppress(OSError):
            s.sendall(health + big + health)
        answer = _read_all(s)
    parts = answer.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"431"], answer[:300]


def test_unparseable_requests_get_a_json_400(server: CorollaProcess) -> None:
    with contextlib.closing(_raw(server)) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.endswith(b'{"error": "Invalid HTTP request received."}')


def test_requests_before_an_unparseable_one_are_answered_first(server: CorollaProcess) -> None:
    # Pipelined in one write: the complete requests get their answers, then the 400, then the
    # connection closes. (A Content-Length shorter than its body leaves such garbage too.)
    health = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    status = b"GET /v1/models/m HTTP/1.1\r\nhost: x\r\n\r\n"
    with contextlib.closing(_raw(server)) as s:
        s.sendall(health + status + b"GARBAGE\r\n\r\n")
        answer = _read_all(s)
    parts = answer.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"200", b"400"], answer
    assert parts[0].endswith(b'{"live": true}') and b"model_version_status" in parts[1]
    assert parts[2].endswith(b'{"error": "Invalid HTTP request received."}')


def test_a_broken_chunked_body_is_refused_at_once(server: CorollaProcess) -> None:
    # Bad bytes inside the body of the request being received fail it now (not after the
    # body deadline): nothing else on the connection is owed an answer.
    head = (b"POST /v1/models/m:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\ntransfer-encoding: chunked\r\n\r\n")
    with contextlib.closing(_raw(server)) as s:
        s.sendall(head + b"5\r\n{\"ins\r\nzz-not-a-size\r\n")
        t0 = time.monotonic()
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert time.monotonic() - t0 < 0.9  # the fixture's body deadline is 1 s
