"""The REST operations middlewares in process (ASGI transport): request ids, metrics labels,
auth 401/403, body size 413, concurrency 429, health and metrics endpoints, draining."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_process import fake_model, predict_body, scrape

from corolla.batching import BatchingOptions
from corolla.config import ModelConfig
from corolla.http.limits import HttpLimits
from corolla.server import CorollaServer, ServerOptions

Make = Callable[..., Awaitable[tuple[CorollaServer, httpx.AsyncClient]]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    made: list[tuple[CorollaServer, httpx.AsyncClient]] = []

    async def factory(**kw: Any) -> tuple[CorollaServer, httpx.AsyncClient]:
        fake_model(tmp_path / "m", 1, **kw.pop("spec", {}))
        fake_model(tmp_path / "other", 1)
        opts = ServerOptions(
            models=(
                ModelConfig(name="m", base_path=str(tmp_path / "m")),
                ModelConfig(name="other", base_path=str(tmp_path / "other")),
            ),
            enable_fake_runtime=True,
            grpc_port=-1,
            **kw,
        )
        server = CorollaServer(opts)
        await server.manager.set_configs(list(opts.models))
        await server.manager.wait_until(server.ready, 10)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=server.rest_app()), base_url="http://corolla"
        )
        made.append((server, client))
        return server, client

    yield factory
    for server, client in made:
        await client.aclose()
        await server.manager.close()
        server.infer_pool.shutdown()
        server.decode_pool.shutdown()
        server.load_pool.shutdown()


async def test_request_id_is_echoed_or_made(make: Make) -> None:
    _, c = await make()
    r = await c.post(
        "/v1/models/m:predict", json=predict_body(), headers={"x-request-id": "abc-123"}
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "abc-123"
    r1, r2 = await c.get("/healthz"), await c.get("/healthz")
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]
    bad = await c.get("/healthz", headers={"x-request-id": "no spaces allowed"})
    assert bad.headers["x-request-id"] != "no spaces allowed"


async def test_metrics_status_labels_follow_the_canonical_code(make: Make) -> None:
    # Explicit batching parameters (no autotune): the fake model is cheap enough that Corolla's
    # defaults would run it inline, and the queuing metric below would stay empty.
    _server, c = await make(batching=BatchingOptions())
    for _ in range(3):
        assert (await c.post("/v1/models/m:predict", json=predict_body())).status_code == 200
    r = await c.post("/v1/models/m:predict", json={"instances": [[1, 2]]})  # wrong shape
    assert r.status_code == 400
    r = await c.post("/v1/models/nope:predict", json=predict_body())
    assert r.status_code == 404
    r = await c.post("/v1/models/m:classify", json={"examples": [{"x": [1, 2, 3, 4]}]})
    assert r.status_code == 200
    m = scrape((await c.get("/metrics")).text)
    assert m[':tensorflow:serving:request_count{model_name="m",status="OK"}'] == 4
    assert m[':tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"}'] == 1
    # Unknown model names share one label value: a client cannot grow the series without bound.
    assert m[':tensorflow:serving:request_count{model_name="_unknown",status="NOT_FOUND"}'] == 1
    assert (
        m[
            ':tensorflow:serving:request_latency_count{model_name="m",API="Predict",'
            'entrypoint="REST"}'
        ]
        == 4
    )
    assert (
        m[
            ':tensorflow:serving:request_latency_count{model_name="m",API="Classify",'
            'entrypoint="REST"}'
        ]
        == 1
    )
    assert (
        m[':tensorflow:serving:runtime_latency_count{model_name="m",API="Predict",runtime="fake"}']
        == 4
    )
    assert (
        m[':tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="m"}'] == 4
    )
    assert m['corolla_model_versions{model_name="m",state="AVAILABLE"}'] == 1
    assert m["corolla_server_ready"] == 1
    assert m['corolla_inflight_requests{entrypoint="REST"}'] == 0
    assert "process_resident_memory_bytes" in m


async def test_auth_401_403_200_and_open_health(make: Make, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("all-models-key\nonly-other other  # a comment\n")
    _, c = await make(auth_keys_file=str(keys))
    r = await c.post("/v1/models/m:predict", json=predict_body())
    assert r.status_code == 401 and r.json()["error"].startswith("Missing API key")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await c.post(
        "/v1/models/m:predict", json=predict_body(), headers={"authorization": "Bearer wrong"}
    )
    assert r.status_code == 401 and r.json() == {"error": "Invalid API key"}
    r = await c.post(
        "/v1/models/m:predict", json=predict_body(), headers={"authorization": "Bearer only-other"}
    )
    assert r.status_code == 403
    r = await c.post(
        "/v1/models/other:predict", json=predict_body(), headers={"x-api-key": "only-other"}
    )
    assert r.status_code == 200
    r = await c.post(
        "/v1/models/m:predict",
        json=predict_body(),
        headers={"authorization": "bearer all-models-key"},
    )
    assert r.status_code == 200
    assert (await c.get("/v2/health/ready")).status_code == 200  # health is open by default
    assert (await c.get("/readyz")).status_code == 200
    assert (await c.get("/v2/models/m/ready")).status_code == 200
    assert (await c.get("/v2/models/m")).status_code == 401  # metadata is not health
    assert (await c.get("/metrics")).status_code == 401  # metrics are not, by default
    m = await c.get("/metrics", headers={"x-api-key": "all-models-key"})
    assert (
        ':tensorflow:serving:request_count{model_name="m",status="UNAUTHENTICATED"} 2.0' in m.text
    )
    assert 'status="PERMISSION_DENIED"} 1.0' in m.text


@pytest.mark.parametrize("open_health", [True, False])
async def test_a_key_for_one_model_is_refused_on_every_route_of_another(
        make: Make, tmp_path: Path, open_health: bool) -> None:
    """Issue 22: a key restricted to one model read another model's V2 ``/config``. Auth and
    the router read the one route table, so this walks the table: every route that names a
    model refuses a key for another model (403), with every method it takes, and lets the key
    through for its own model. A route added to the table is checked here without a new test;
    a route outside it may not name a model."""
    keys = tmp_path / "keys"
    keys.write_text("only-m m\n")
    server, c = await make(auth_keys_file=str(keys), auth_open_health=open_health)
    scoped = [r for r in server.rest_routes() if r.model_scoped]
    assert {r.api for r in scoped} == {
        "Predict", "Classify", "Regress", "GetModelStatus", "GetModelMetadata",
        "ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig"}
    assert all("{" not in getattr(r, "path", "") for r in server.other_routes())
    key = {"x-api-key": "only-m"}
    checked = 0
    for route in scoped:
        for method in sorted(route.methods):
            other = route.example(name="other", version="1", label="stable")
            own = route.example(name="m", version="1", label="stable")
            r = await c.request(method, other, headers=key, content=b"{}")
            mine = await c.request(method, own, headers=key, content=b"{}")
            assert mine.status_code not in (401, 403), (method, own, mine.text)
            if route.api == "ModelReady" and open_health:
                assert r.status_code != 403  # per-model readiness is health, open here
                continue
            assert r.status_code == 403, (method, other, r.text)
            if method != "HEAD":
                assert r.json() == {"error": "This API key may not call model other"}
            checked += 1
    open_routes = sum(len(r.methods) for r in scoped if r.api == "ModelReady" and open_health)
    assert checked == sum(len(r.methods) for r in scoped) - open_routes > 50


async def test_auth_open_metrics_and_closed_health(make: Make) -> None:
    _, c = await make(auth_keys=("k",), auth_open_health=False, auth_open_metrics=True)
    assert (await c.get("/metrics")).status_code == 200
    assert (await c.get("/healthz")).status_code == 401
    assert (await c.get("/healthz", headers={"x-api-key": "k"})).status_code == 200


async def test_body_limit_413_by_content_length_and_by_chunks(make: Make) -> None:
    _, c = await make(http_limits=HttpLimits(max_body_bytes=1000))
    big = {"instances": [[1.0, 2.0, 3.0, 4.0]] * 200}
    r = await c.post("/v1/models/m:predict", json=big)
    assert r.status_code == 413 and "exceeds the limit of 1000 bytes" in r.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"instances": ['
        for _ in range(200):
            yield b"[1.0, 2.0, 3.0, 4.0],"
        yield b"[1.0, 2.0, 3.0, 4.0]]}"

    r = await c.post(
        "/v1/models/m:predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]
    assert (await c.post("/v1/models/m:predict", json=predict_body())).status_code == 200


async def test_body_limit_413_applies_to_the_inflated_body(make: Make) -> None:
    # A gzip bomb: a few KiB on the wire that inflate to far more than the body limit must be
    # refused at the limit (413), not inflated up to a fixed 1 GiB cap per request.
    _, c = await make(http_limits=HttpLimits(max_body_bytes=100_000))
    bomb = gzip.compress(b" " * 5_000_000)
    assert len(bomb) < 100_000
    for path in ("/v1/models/m:predict", "/v2/models/m/infer"):
        r = await c.post(path, content=bomb, headers={"content-type": "application/json",
                                                      "content-encoding": "gzip"})
        assert r.status_code == 413, (path, r.text)
        assert "exceeds the limit" in r.json()["error"] or "past the limit" in r.json()["error"]
    small = gzip.compress(json.dumps(predict_body()).encode())
    r = await c.post("/v1/models/m:predict", content=small,
                     headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 200, r.text


async def test_concurrency_limit_429(make: Make) -> None:
    _, c = await make(
        spec={"predict_seconds": 0.5}, http_limits=HttpLimits(max_concurrent_requests=2)
    )
    results = await asyncio.gather(
        *(c.post("/v1/models/m:predict", json=predict_body()) for _ in range(5))
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 429, 429, 429]
    assert all(
        "Too many concurrent requests" in r.json()["error"] for r in results if r.status_code == 429
    )
    # Health is never limited, even at the limit.
    slow = [
        asyncio.create_task(c.post("/v1/models/m:predict", json=predict_body())) for _ in range(2)
    ]
    await asyncio.sleep(0.1)
    assert (await c.get("/readyz")).status_code == 200
    await asyncio.gather(*slow)


async def test_deadline_504(make: Make) -> None:
    _, c = await make(spec={"predict_seconds": 1.0}, rest_api_timeout_in_ms=200)
    r = await c.post("/v1/models/m:predict", json=predict_body())
    assert r.status_code == 504 and "Deadline exceeded" in r.json()["error"]


async def test_readiness_and_draining(make: Make) -> None:
    server, c = await make()
    r = await c.get("/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True}
    assert (await c.get("/readyz", params={"model": "m"})).json() == {"model": "m", "ready": True}
    assert (await c.get("/readyz", params={"model": "zz"})).status_code == 404
    server.request_stop()
    r = await c.get("/readyz")
    assert r.status_code == 503 and r.json()["draining"] is True
    assert (await c.get("/v2/health/ready")).status_code != 200
    assert (await c.get("/healthz")).status_code == 200  # still live
    # Requests are still served while draining, and ask the client to drop the connection.
    r = await c.post("/v1/models/m:predict", json=predict_body())
    assert r.status_code == 200 and r.headers["connection"] == "close"


async def test_cors_preflight_passes_auth(make: Make) -> None:
    _, c = await make(auth_keys=("k",), cors_allowed_origins=("https://app.example",))
    r = await c.options(
        "/v1/models/m:predict",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = await c.options(
        "/v1/models/m:predict",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert r.status_code == 400
    # A 401 still carries the CORS headers, so that the browser can show it.
    r = await c.post(
        "/v1/models/m:predict", json=predict_body(), headers={"origin": "https://app.example"}
    )
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == "https://app.example"


async def test_the_decoded_image_cap_reaches_the_prediction_service(make: Make) -> None:
    server, _ = await make(max_decoded_image_bytes=12345)
    assert server.service.options.max_decoded_image_bytes == 12345


async def test_a_v2_body_with_binary_tensors_takes_a_parse_allowance_for_its_json_only() -> None:
    # tritonclient sends binary tensors after a JSON header of Inference-Header-Content-Length
    # bytes, with no octet-stream Content-Type. The middleware took 40x the whole body (at most
    # half the budget) for a parse that reads only the header, so a 9.6 MB binary request was
    # refused 413 under a 16 MiB budget (found from outside with tritonclient).
    from corolla.admission import CURRENT, JSON_PEAK_FACTOR, MemoryBudget
    from corolla.http.limits import LimitsMiddleware
    from corolla.metrics import Inflight

    budget = MemoryBudget(16 << 20)
    seen: dict[str, int] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ledger = CURRENT.get()
        assert ledger is not None
        seen["held"], seen["parsing"] = ledger.held, ledger.parsing
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    mw = LimitsMiddleware(app, HttpLimits(max_body_bytes=32 << 20), Inflight(), memory=budget)
    for length, header_length, parse in ((10_000_000, 200, JSON_PEAK_FACTOR * 200),
                                         (6_000_000, None, 8 << 20)):  # JSON: half the budget
        headers = [(b"content-length", str(length).encode())]
        if header_length is not None:
            headers.append((b"inference-header-content-length", str(header_length).encode()))
        sent.clear()
        await mw({"type": "http", "method": "POST", "path": "/v2/models/m/infer",
                  "headers": headers}, receive, send)
        assert sent[0]["status"] == 200
        assert seen == {"held": length + parse, "parsing": parse}
    assert budget.in_use == 0
