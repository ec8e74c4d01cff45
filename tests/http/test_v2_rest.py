"""KServe V2 REST routes in process (ASGI transport): JSON, binary, tritonclient codecs."""

from __future__ import annotations

import base64
import gzip
import io
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import pytest_asyncio
from PIL import Image

from corolla.config import ModelConfig
from corolla.demo_model import write_demo_version
from corolla.http.app import route_app
from corolla.http.kserve_v2 import KServeV2Rest
from corolla.repository.manager import Manager, ManagerOptions
from corolla.runtimes.fake import FakeRuntime, write_fake_version
from corolla.runtimes.onnx import OnnxOptions, OnnxRuntime
from corolla.service import PredictionService, ServiceOptions

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import tritonclient.http as triton


def _jpeg(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    write_demo_version(tmp_path / "colours", 1, size=16)
    write_fake_version(tmp_path / "fake", 3, labels=["a", "b"])
    pool = ThreadPoolExecutor(2)
    manager = Manager(runtimes=[OnnxRuntime(OnnxOptions(intra_op_threads=1)), FakeRuntime()],
                      executor=pool, options=ManagerOptions(max_load_retries=0))
    service = PredictionService(manager, options=ServiceOptions(batching=None),
                                decode_executor=pool, infer_executor=pool)
    await manager.set_configs([ModelConfig(name=n, base_path=str(tmp_path / n))
                               for n in ("colours", "fake")])
    await manager.wait_until(service.ready, 30)
    app = route_app(KServeV2Rest(service).routes())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        c.service = service  # type: ignore[attr-defined]
        yield c
    await manager.close()
    pool.shutdown(wait=False)


async def test_health_and_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).status_code == 200
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "corolla" and "binary_tensor_data" in meta["extensions"]
    md = (await client.get("/v2/models/colours")).json()
    assert md["versions"] == ["1"] and md["platform"] == "onnxruntime_onnx"
    assert md["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 16, 16, 3]}]
    assert (await client.get("/v2/models/fake/versions/3")).json()["name"] == "fake"
    assert (await client.get("/v2/models/fake/versions/3/ready")).status_code == 200
    assert (await client.get("/v2/models/fake/versions/4/ready")).status_code == 400
    assert (await client.get("/v2/models/nope/ready")).json() == {"name": "nope",
                                                                 "ready": False}
    r = await client.get("/v2/models/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    client.service.draining = True  # type: ignore[attr-defined]
    assert (await client.get("/v2/health/ready")).status_code == 400


async def test_json_infer(client: httpx.AsyncClient) -> None:
    body = {"id": "q1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                    "data": [1, 2, 3, 4]}]}
    r = await client.post("/v2/models/fake/infer", content=orjson.dumps(body))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == "fake" and doc["model_version"] == "3" and doc["id"] == "q1"
    assert doc["outputs"][0] == {"name": "outputs", "datatype": "FP32", "shape": [1, 4],
                                 "data": [2.0, 4.0, 6.0, 8.0]}


async def test_json_image_infer(client: httpx.AsyncClient) -> None:
    body = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2],
                        "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(_jpeg((240, 5, 5))).decode(),
                                 base64.b64encode(_jpeg((5, 5, 5))).decode()]}]}
    r = await client.post("/v2/models/colours/versions/1/infer", json=body)
    assert r.status_code == 200, r.text
    scores = np.array(r.json()["outputs"][0]["data"]).reshape(2, 5)
    assert scores.argmax(axis=1).tolist() == [0, 4]


@pytest.mark.parametrize("compress", [None, "gzip"])
async def test_binary_infer_with_tritonclient_codec(client: httpx.AsyncClient,
                                                    compress: str | None) -> None:
    img = triton.InferInput("images", [1, 1], "BYTES")
    img.set_data_from_numpy(np.array([[_jpeg((5, 230, 5))]], dtype=object), binary_data=True)
    out = triton.InferRequestedOutput("probabilities", binary_data=True)
    body, header_length = triton.InferenceServerClient.generate_request_body([img], [out])
    headers = {"Inference-Header-Content-Length": str(header_length)}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = compress
    r = await client.post("/v2/models/colours/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    length = int(r.headers["Inference-Header-Content-Length"])
    result = triton.InferResult.from_response_body(r.content, header_length=length)
    assert result.as_numpy("probabilities").argmax() == 1


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v2/models/nope/infer", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                                           "data": [1]}]}, 404, "nope"),
    ("/v2/models/fake/infer", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5],
                                           "data": [1] * 5}]}, 400, "shape"),
    ("/v2/models/fake/infer", {"inputs": []}, 400, "inputs"),
    ("/v2/models/fake/versions/x/infer", {"inputs": [{"name": "x", "datatype": "FP32",
                                                      "shape": [1, 4], "data": [1] * 4}]},
     400, "version"),
    ("/v2/models/colours/infer", {"inputs": [{"name": "images", "datatype": "BYTES",
                                              "shape": [1], "data": ["not an image"]}]},
     400, "image"),
])
async def test_errors(client: httpx.AsyncClient, path: str, body: dict, status: int,
                      message: str) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == status and message in r.json()["error"], r.text


async def test_bad_headers(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/models/fake/infer", content=b"{}",
                          headers={"Inference-Header-Content-Length": "x"})
    assert r.status_code == 400
    r = await client.post("/v2/models/fake/infer", content=b"{}",
                          headers={"Content-Encoding": "br"})
    assert r.status_code == 400 and "Content-Encoding" in r.json()["error"]
