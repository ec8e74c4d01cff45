"""The inference fast path answers exactly what the Starlette app answers, good input or bad."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from PIL import Image

from corolla.config import ModelConfig
from corolla.demo_model import write_demo_version
from corolla.http.app import build_app
from corolla.http.fastpath import FastInference
from corolla.http.kserve_v2 import KServeV2Rest
from corolla.http.observe import ObserveMiddleware
from corolla.http.tfserving import TfServingRest
from corolla.repository.manager import Manager, ManagerOptions
from corolla.runtimes.onnx import OnnxOptions, OnnxRuntime
from corolla.service import PredictionService, ServiceOptions


def _jpeg(rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


class Probe:
    """Records which handler ran, so a test can tell that the fast path was taken."""

    def __init__(self, handler: Any) -> None:
        self.handler, self.calls = handler, 0

    async def __call__(self, request: Any) -> Any:
        self.calls += 1
        return await self.handler(request)


@pytest_asyncio.fixture
async def apps(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    write_demo_version(tmp_path / "colours", 1, size=16)
    pool = ThreadPoolExecutor(2)
    manager = Manager(runtimes=[OnnxRuntime(OnnxOptions(intra_op_threads=1))], executor=pool,
                      options=ManagerOptions(max_load_retries=0))
    service = PredictionService(manager, options=ServiceOptions(batching=None),
                                decode_executor=pool, infer_executor=pool)
    await manager.set_configs([ModelConfig(name="colours", base_path=str(tmp_path / "colours"))])
    await manager.wait_until(service.ready, 30)
    v1, v2 = TfServingRest(service), KServeV2Rest(service)
    routes = [*v2.routes(), *v1.routes()]
    p1, p2 = Probe(v1.handle), Probe(v2.infer)
    fast = FastInference(build_app(routes), v1=p1, v2_infer=p2)
    observed = ObserveMiddleware(FastInference(build_app(routes), v1=v1.handle,
                                               v2_infer=v2.infer),
                                 metrics=None, known_model=lambda n: n == "colours",
                                 draining=lambda: False)
    clients = {}
    for name, app in (("slow", build_app(routes)), ("fast", fast), ("observed", observed)):
        clients[name] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                          base_url="http://test")
    yield {"clients": clients, "probes": (p1, p2)}
    for c in clients.values():
        await c.aclose()
    await manager.close()
    pool.shutdown(wait=False)


RED = base64.b64encode(_jpeg((250, 10, 10))).decode()
V2_JSON = orjson.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 16, 16, 3],
                                    "data": [0.5] * 768}]})
CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("POST", "/v1/models/colours:predict", {}, orjson.dumps({"instances": [{"b64": RED}]})),
    ("POST", "/v1/models/colours/versions/1:predict", {},
     orjson.dumps({"instances": [{"b64": RED}], "top_k": 2})),
    ("POST", "/v1/models/colours/labels/stable:predict", {}, b'{"instances": []}'),
    ("POST", "/v1/models/colours:predict", {"content-type": "image/jpeg"}, _jpeg((10, 200, 10))),
    ("POST", "/v1/models/colours:predict?top_k=1", {"content-type": "image/jpeg"},
     _jpeg((10, 10, 200))),
    ("POST", "/v1/models/colours:predict", {"content-type": "image/jpeg"}, b"not a jpeg"),
    ("POST", "/v1/models/colours:predict", {}, b"{not json"),
    ("POST", "/v1/models/colours:predict", {}, b'{"instances": [[1, 2]]}'),
    ("POST", "/v1/models/nope:predict", {}, b'{"instances": [1]}'),
    ("POST", "/v1/models/colours/versions/7:predict", {}, b'{"instances": [1]}'),
    ("POST", "/v1/models/colours/versions/x:predict", {}, b'{"instances": [1]}'),
    ("POST", "/v1/models/colours:predict", {"content-type": "application/xml"}, b"<a/>"),
    ("POST", "/v1/models/colours:predict", {"content-type": "multipart/form-data; boundary=x"},
     b"--x\r\nbroken"),
    ("POST", "/v1/models/colours:predict", {"content-type": "multipart/form-data"}, b"no boundary"),
    ("POST", "/v1/models/colours:predict/", {}, orjson.dumps({"instances": [{"b64": RED}]})),
    ("POST", "/v2/models/colours/infer", {}, V2_JSON),
    ("POST", "/v2/models/colours/versions/1/infer", {}, V2_JSON),
    ("POST", "/v2/models/colours/versions/9/infer", {}, V2_JSON),
    ("POST", "/v2/models/nope/infer", {}, V2_JSON),
    ("POST", "/v2/models/colours/infer", {}, b'{"inputs": 3}'),
    ("POST", "/v2/models/colours/infer", {"content-encoding": "br"}, V2_JSON),
    ("GET", "/v1/models/colours", {}, b""),
    ("GET", "/v1/models/colours:predict", {}, b""),
    ("POST", "/v1/models/colours/metadata", {}, b""),
    ("GET", "/v2/models/colours/infer", {}, b""),
]


@pytest.mark.parametrize(("method", "url", "headers", "body"), CASES,
                         ids=[f"{m} {u} {i}" for i, (m, u, _, _) in enumerate(CASES)])
async def test_same_answers(apps: dict[str, Any], method: str, url: str,
                            headers: dict[str, str], body: bytes) -> None:
    answers = []
    for client in apps["clients"].values():
        r = await client.request(method, url, headers=headers, content=body)
        answers.append((r.status_code, r.headers.get("content-type"), r.content))
    assert answers[0] == answers[1] == answers[2], answers


async def test_inference_takes_the_fast_path(apps: dict[str, Any]) -> None:
    fast = apps["clients"]["fast"]
    p1, p2 = apps["probes"]
    r = await fast.post("/v1/models/colours:predict", content=_jpeg((250, 10, 10)),
                        headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "red"
    assert (await fast.post("/v2/models/colours/infer", content=V2_JSON)).status_code == 200
    assert (p1.calls, p2.calls) == (1, 1)
    # Everything else stays on the Starlette app.
    assert (await fast.get("/v1/models/colours")).status_code == 200
    assert (await fast.get("/v2/health/ready")).status_code == 200
    assert (p1.calls, p2.calls) == (1, 1)


async def test_unexpected_errors_answer_500(apps: dict[str, Any]) -> None:
    async def boom(request: Any) -> Any:
        raise RuntimeError("boom")

    app = FastInference(build_app([]), v1=boom, v2_infer=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as c:
        r = await c.post("/v1/models/m:predict", content=b"{}")
        assert r.status_code == 500
        assert r.json() == {"error": "Internal error; the server log has the details"}
        # No V2 handler given: V2 infer falls through to the (empty) Starlette app.
        assert (await c.post("/v2/models/m/infer", content=b"{}")).status_code == 404
