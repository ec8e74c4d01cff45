"""The REST route table and its router (corolla.http.routes, corolla.http.app.Router).

Every request is matched once against the one table, and the router calls the matched route's
handler. The expected answers below are what the Starlette router and the inference fast path
answered before the table replaced them (the same status and error text, good input or bad).
"""

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
from corolla.http.app import route_app
from corolla.http.kserve_v2 import KServeV2Rest
from corolla.http.observe import ObserveMiddleware
from corolla.http.routes import Route, RouteTable
from corolla.http.tfserving import TfServingRest
from corolla.repository.manager import Manager, ManagerOptions
from corolla.runtimes.onnx import OnnxOptions, OnnxRuntime
from corolla.service import PredictionService, ServiceOptions


def _jpeg(rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# A progressive JPEG with odd sampling factors, found by the image fuzzer: libjpeg-turbo's
# header read (simplejpeg) raised KeyError on it, which was no client error.
_FUZZ_JPEG = base64.b64decode(
    "/9j//////////////////////////8IAEQgAEAAYAwEUAAIRAQMRAf///////////8QAFgEBAQEAAAAAAAAAAAAAA"
    "AAAAAUG/9oADAMBAAIQAxAwAF//2Q==")


class Probe:
    """Records which handler ran, so a test can tell which route answered."""

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
    probes: dict[str | None, Probe] = {}

    def probed(route: Route) -> Route:
        probe = probes.setdefault(route.api, Probe(route.handler))
        return Route(api=route.api, path=route.path, methods=route.methods, handler=probe,
                     prefix=route.prefix)

    routes = [probed(r) for r in (*v2.routes(), *v1.routes())]
    table = RouteTable(routes)
    observed = ObserveMiddleware(route_app(routes), table=table, metrics=None,
                                 known_model=lambda n: n == "colours", draining=lambda: False)
    clients = {}
    for name, app in (("router", route_app(routes)), ("observed", observed)):
        clients[name] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                          base_url="http://test")
    yield {"clients": clients, "probes": probes, "routes": routes}
    for c in clients.values():
        await c.aclose()
    await manager.close()
    pool.shutdown(wait=False)


RED = base64.b64encode(_jpeg((250, 10, 10))).decode()
V2_JSON = orjson.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 16, 16, 3],
                                    "data": [0.5] * 768}]})
CASES: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    ("POST", "/v1/models/colours:predict", {}, orjson.dumps({"instances": [{"b64": RED}]}),
     200, ''),
    ("POST", "/v1/models/colours/versions/1:predict", {},
     orjson.dumps({"instances": [{"b64": RED}], "top_k": 2}),
     200, ''),
    ("POST", "/v1/models/colours/labels/stable:predict", {}, b'{"instances": []}',
     400, 'Unrecognized servable version label: stable'),
    ("POST", "/v1/models/colours:predict", {"content-type": "image/jpeg"}, _jpeg((10, 200, 10)),
     200, ''),
    ("POST", "/v1/models/colours:predict?top_k=1", {"content-type": "image/jpeg"},
     _jpeg((10, 10, 200)),
     200, ''),
    ("POST", "/v1/models/colours:predict", {"content-type": "image/jpeg"}, b"not a jpeg",
     400, 'image 0: bytes are not an image Corolla can deco'),
    ("POST", "/v1/models/colours:predict", {"content-type": "image/jpeg"}, _FUZZ_JPEG,
     400, 'image 0: cannot decode JPEG'),
    ("POST", "/v1/models/colours:predict", {}, b"{not json",
     400, 'JSON Parse error: Expecting property name enclos'),
    ("POST", "/v1/models/colours:predict", {}, b'{"instances": [[1, 2]]}',
     400, "input 'images' has shape [1,2] but the model exp"),
    ("POST", "/v1/models/nope:predict", {}, b'{"instances": [1]}',
     404, 'Servable not found for request: Latest(nope)'),
    ("POST", "/v1/models/colours/versions/7:predict", {}, b'{"instances": [1]}',
     404, 'Servable not found for request: Specific(colours'),
    ("POST", "/v1/models/colours/versions/x:predict", {}, b'{"instances": [1]}',
     400, 'Failed to convert version: x to numeric.'),
    ("POST", "/v1/models/colours:predict", {"content-type": "application/xml"}, b"<a/>",
     400, "unsupported Content-Type 'application/xml': send"),
    ("POST", "/v1/models/colours:predict", {"content-type": "multipart/form-data; boundary=x"},
     b"--x\r\nbroken",
     400, 'multipart/form-data request has no file parts'),
    ("POST", "/v1/models/colours:predict", {"content-type": "multipart/form-data"}, b"no boundary",
     400, 'Missing boundary in multipart.'),
    ("POST", "/v1/models/colours:predict/", {}, orjson.dumps({"instances": [{"b64": RED}]}),
     200, ''),
    ("POST", "/v2/models/colours/infer", {}, V2_JSON,
     200, ''),
    ("POST", "/v2/models/colours/versions/1/infer", {}, V2_JSON,
     200, ''),
    ("POST", "/v2/models/colours/versions/9/infer", {}, V2_JSON,
     404, 'Servable not found for request: Specific(colours'),
    ("POST", "/v2/models/nope/infer", {}, V2_JSON,
     404, 'Servable not found for request: Latest(nope)'),
    ("POST", "/v2/models/colours/infer", {}, b'{"inputs": 3}',
     400, "the request must have a non-empty 'inputs' list"),
    ("POST", "/v2/models/colours/infer", {"content-encoding": "br"}, V2_JSON,
     400, "unsupported Content-Encoding 'br' (gzip, deflate"),
    ("GET", "/v1/models/colours", {}, b"",
     200, ''),
    ("GET", "/v1/models/colours:predict", {}, b"",
     404, 'Malformed request: GET /v1/models/colours:predic'),
    ("POST", "/v1/models/colours/metadata", {}, b"",
     404, 'Malformed request: POST /v1/models/colours/metad'),
    ("GET", "/v2/models/colours/infer", {}, b"",
     405, 'Method GET is not allowed on /v2/models/colours/'),
]


@pytest.mark.parametrize(("method", "url", "headers", "body", "status", "message"), CASES,
                         ids=[f"{c[0]} {c[1]} {i}" for i, c in enumerate(CASES)])
async def test_same_answers(apps: dict[str, Any], method: str, url: str,
                            headers: dict[str, str], body: bytes, status: int,
                            message: str) -> None:
    answers = []
    for client in apps["clients"].values():
        r = await client.request(method, url, headers=headers, content=body)
        answers.append((r.status_code, r.headers.get("content-type"), r.content))
    assert answers[0] == answers[1], answers
    got, ctype, content = answers[0]
    assert (got, ctype) == (status, "application/json"), answers[0]
    if status != 200:
        assert orjson.loads(content)["error"].startswith(message)


async def test_each_request_reaches_its_routes_handler(apps: dict[str, Any]) -> None:
    router = apps["clients"]["router"]
    probes = apps["probes"]

    def calls() -> dict[str | None, int]:
        return {api: p.calls for api, p in probes.items() if p.calls}

    r = await router.post("/v1/models/colours:predict", content=_jpeg((250, 10, 10)),
                          headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "red"
    assert (await router.post("/v2/models/colours/infer", content=V2_JSON)).status_code == 200
    assert calls() == {"Predict": 1, "ModelInfer": 1}
    assert (await router.get("/v1/models/colours")).status_code == 200
    assert (await router.get("/v2/health/ready")).status_code == 200
    assert (await router.get("/v2/models/colours/versions/1/config")).status_code == 200
    assert calls() == {"Predict": 1, "ModelInfer": 1, "GetModelStatus": 1, "ServerReady": 1,
                       "ModelConfig": 1}
    # A path that no route takes goes to the fallback app (404), no handler runs.
    assert (await router.get("/v2/models/colours/nope")).status_code == 404
    assert sum(calls().values()) == 5


async def test_unexpected_errors_answer_500() -> None:
    async def boom(request: Any) -> Any:
        raise RuntimeError("boom")

    app = route_app([Route(api="Predict", path="/v1/models/{name}:predict",
                           methods=frozenset({"POST"}), handler=boom)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as c:
        r = await c.post("/v1/models/m:predict", content=b"{}")
        assert r.status_code == 500
        assert r.json() == {"error": "Internal error; the server log has the details"}
        # No route for V2 infer: the (empty) fallback Starlette app answers 404.
        r = await c.post("/v2/models/m/infer", content=b"{}")
        assert r.status_code == 404
        assert r.json() == {"error": "Malformed request: POST /v2/models/m/infer"}


async def _ok(request: Any) -> Any:
    raise AssertionError("not called")


def _table() -> RouteTable:
    get, post = frozenset({"GET"}), frozenset({"POST"})
    any3 = frozenset({"GET", "HEAD", "POST"})
    return RouteTable([
        Route(api="Predict", path="/v1/models/{name}:predict", methods=any3, handler=_ok),
        Route(api="Predict", path="/v1/models/{name}/versions/{version}:predict", methods=any3,
              handler=_ok),
        Route(api="GetModelStatus", path="/v1/models/{name}/labels/{label}", methods=any3,
              handler=_ok),
        Route(api=None, path="/v1/models/", prefix=True, methods=any3, handler=_ok),
        Route(api="ModelInfer", path="/v2/models/{name}/infer", methods=post, handler=_ok),
        Route(api="ModelConfig", path="/v2/models/{name}/versions/{version}/config",
              methods=get, handler=_ok),
        Route(api="ServerLive", path="/v2/health/live", methods=get, handler=_ok),
    ])


@pytest.mark.parametrize(("method", "path", "api", "params", "allowed"), [
    ("POST", "/v1/models/m:predict", "Predict", {"name": "m"}, ()),
    ("POST", "/v1/models/m:predict/", "Predict", {"name": "m"}, ()),  # v1: trailing slash
    ("POST", "/v1/models/m/versions/3:predict", "Predict", {"name": "m", "version": "3"}, ()),
    ("GET", "/v1/models/m/labels/stable", "GetModelStatus", {"name": "m", "label": "stable"},
     ()),
    ("PUT", "/v1/models/m:predict", "Predict", {"name": "m"}, ("GET", "HEAD", "POST")),
    # v1 parameters stop at ':': not the predict route, the malformed-request catch-all.
    ("POST", "/v1/models/m:x:predict", None, {}, ()),
    ("POST", "/v1/models/m:explain", None, {}, ()),
    ("POST", "/v2/models/a:b/infer", "ModelInfer", {"name": "a:b"}, ()),
    ("GET", "/v2/models/m/infer", "ModelInfer", {"name": "m"}, ("POST",)),
    ("GET", "/v2/models/m/versions/2/config", "ModelConfig", {"name": "m", "version": "2"}, ()),
    ("HEAD", "/v2/health/live", "ServerLive", {}, ()),  # GET routes take HEAD
    ("POST", "/v2/health/live", "ServerLive", {}, ("GET", "HEAD")),
])
def test_table_matches(method: str, path: str, api: str | None, params: dict[str, str],
                       allowed: tuple[str, ...]) -> None:
    match = _table().match(method, path)
    assert match is not None
    assert (match.api, dict(match.params), match.allowed) == (api, params, allowed)
    assert match.model == params.get("name") and match.version == params.get("version")


@pytest.mark.parametrize("path", ["/v1/models", "/v2/models/m/infer/", "/v2/models/m",
                                  "/v2/health/live/", "/nope", "/v2/models//infer"])
def test_table_takes_no_other_path(path: str) -> None:
    assert _table().match("GET", path) is None


def test_routes_name_their_model() -> None:
    route = Route(api="ModelConfig", path="/v2/models/{name}/versions/{version}/config",
                  methods=frozenset({"GET"}), handler=_ok)
    assert route.model_scoped and route.methods == {"GET", "HEAD"}
    assert route.example(name="x", version="7") == "/v2/models/x/versions/7/config"
    assert not Route(api="ServerLive", path="/v2/health/live", methods=frozenset({"GET"}),
                     handler=_ok).model_scoped


BAD_VERSIONS = ["²", "¹", "١", "1²", "-1", "9" * 30]
INFERENCE = {"Predict", "Classify", "Regress", "ModelInfer"}


@pytest.mark.parametrize("version", BAD_VERSIONS)
async def test_a_version_that_is_no_number_is_a_client_mistake_on_every_route(
        apps: dict[str, Any], version: str) -> None:
    """Issue 22: '²' passed str.isdigit() and failed int(), 500 on every route with a version."""
    routes = [r for r in apps["routes"] if "{version}" in r.path]
    assert {r.api for r in routes} == {"Predict", "Classify", "Regress", "GetModelStatus",
                                       "GetModelMetadata", "ModelInfer", "ModelMetadata",
                                       "ModelReady", "ModelConfig"}
    router = apps["clients"]["router"]
    for route in routes:
        method = "POST" if route.api in INFERENCE else "GET"
        path = route.example(name="colours", version=version)
        body = V2_JSON if route.api == "ModelInfer" else b'{"instances": [1]}'
        r = await router.request(method, path, content=body)
        assert r.status_code == 400, (method, path, r.text)
        if route.api == "ModelReady":
            assert r.json() == {"name": "colours", "ready": False}
        elif route.path.startswith("/v1/"):
            assert r.json() == {"error": f"Failed to convert version: {version} to numeric."}
        else:
            assert r.json()["error"].startswith("model version must be a positive integer")
