"""TF Serving's REST API end to end: ``corolla serve`` as a real process, HTTP on loopback.

One server (module scope) serves the demo colour classifier ("colors", ONNX, 16x16 input, with a
second signature) and a fake-runtime model ("fake", input x: float32 [-1, 4], labels a-d).
A second server with a slow model and a one-batch queue checks overload (429) and deadlines
(504).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from corolla.demo_model import LABELS, build_onnx, metadata
from corolla.model_dir import write_metadata
from corolla.model_publish import stage_version
from corolla.runtimes.fake import write_fake_version

pytestmark = pytest.mark.slow

SIZE = 16
RGB = {"red": (230, 20, 20), "green": (20, 210, 20), "blue": (20, 20, 230),
       "white": (250, 250, 250), "black": (5, 5, 5)}  # fmt: skip


def image(colour: str, fmt: str = "JPEG", size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, RGB[colour]).save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def pixels(colour: str) -> list[Any]:
    """One raw model input (16x16x3 floats in [0, 1]) of a solid colour."""
    return np.broadcast_to(np.array(RGB[colour]) / 255, (SIZE, SIZE, 3)).tolist()


def with_nan(value: list[Any]) -> list[Any]:
    value[0][0][0] = float("nan")
    return value


def argmax_label(scores: list[float]) -> str:
    return LABELS[int(np.argmax(scores))]


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def write_colors(base: Path) -> None:
    """The demo classifier, with a second signature ("probs") over the same tensors."""
    md = metadata(SIZE)
    sig = md.signatures["serving_default"]
    md = dataclasses.replace(md, signatures={"serving_default": sig, "probs": sig})
    with stage_version(base, 1) as staged:
        (staged.path / "model.onnx").write_bytes(build_onnx(SIZE))
        write_metadata(staged.path, md)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, servers_in: Any, models_config: Callable[..., str]
) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("rest")
    write_colors(root / "colors")
    write_fake_version(root / "fake", 1, labels=["a", "b", "c", "d"])
    write_fake_version(root / "plain", 1)  # no labels: not a classifier
    config = root / "models.config"
    config.write_text(
        models_config(
            {"name": "colors", "base_path": root / "colors"},
            {"name": "fake", "base_path": root / "fake"},
            {"name": "plain", "base_path": root / "plain"},
        )
    )
    with servers_in(root) as start:
        yield start(
            f"--model_config_file={config}",
            "--max_image_pixels=1000000",
            wait_for=("colors", "fake", "plain"),
            fake_runtime=True,
        )


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


# ---- status and metadata --------------------------------------------------------------------


def test_status(server: Any) -> None:
    expected = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]}  # fmt: skip
    assert ok(server.get("/v1/models/colors")) == expected
    assert ok(server.get("/v1/models/colors/versions/1")) == expected


def test_head_answers_as_get_without_a_body(server: Any) -> None:
    for path in ("/v1/models/colors", "/v1/models/colors/versions/1/metadata"):
        got = server.http.get(path)
        head = server.http.head(path)
        assert head.status_code == got.status_code == 200
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))
    assert server.http.head("/v1/models/nothing").status_code == 404
    assert server.http.head("/v1/models/colors:predict").status_code == 404


def test_metadata(server: Any) -> None:
    for path in ("/v1/models/colors/metadata", "/v1/models/colors/versions/1/metadata"):
        doc = ok(server.get(path))
        assert doc["model_spec"] == {"name": "colors", "signature_name": "", "version": "1"}
        sigs = doc["metadata"]["signature_def"]["signature_def"]
        assert set(sigs) == {"serving_default", "probs"}
        images = sigs["serving_default"]["inputs"]["images"]
        assert images["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "16", "16", "3"]
        assert doc["metadata"]["corolla"]["labels"] == list(LABELS)


# ---- predict --------------------------------------------------------------------------------


def test_predict_row_format(server: Any) -> None:
    doc = ok(
        server.post(
            "/v1/models/colors:predict", json={"instances": [pixels("red"), pixels("blue")]}
        )
    )
    preds = doc["predictions"]
    assert [argmax_label(p) for p in preds] == ["red", "blue"]
    assert all(abs(sum(p) - 1) < 1e-4 for p in preds)
    named = ok(
        server.post(
            "/v1/models/colors/versions/1:predict",
            json={"instances": [{"images": pixels("green")}]},
        )
    )
    assert argmax_label(named["predictions"][0]) == "green"


def test_predict_columnar_format(server: Any) -> None:
    doc = ok(
        server.post(
            "/v1/models/colors:predict", json={"inputs": [pixels("white"), pixels("black")]}
        )
    )
    assert [argmax_label(p) for p in doc["outputs"]] == ["white", "black"]
    doc = ok(
        server.post("/v1/models/colors:predict", json={"inputs": {"images": [pixels("green")]}})
    )
    assert argmax_label(doc["outputs"][0]) == "green"


def test_predict_row_and_columnar_agree(server: Any) -> None:
    rows = ok(server.post("/v1/models/colors:predict", json={"instances": [pixels("blue")]}))
    cols = ok(server.post("/v1/models/colors:predict", json={"inputs": [pixels("blue")]}))
    assert np.allclose(rows["predictions"], cols["outputs"], atol=1e-6)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_predict_compressed_body(server: Any, encoding: str) -> None:
    # TF Serving's HTTP server inflates gzip request bodies (auto_uncompress_input, on by
    # default), so clients that compress their JSON work unchanged.
    body = json.dumps({"instances": [pixels("red"), pixels("blue")]}).encode()
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    doc = ok(
        server.post(
            "/v1/models/colors:predict",
            content=packed,
            headers={"Content-Type": "application/json", "Content-Encoding": encoding},
        )
    )
    assert [argmax_label(p) for p in doc["predictions"]] == ["red", "blue"]
    doc = ok(
        server.post(
            "/v1/models/colors:predict",
            content=gzip.compress(image("green")),
            headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"},
        )
    )
    assert doc["predictions"][0]["label"] == "green"
    r = server.post(
        "/v1/models/colors:predict",
        content=b"not gzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 400 and "gzip" in r.json()["error"]


def test_predict_signature_name(server: Any) -> None:
    for sig in ("serving_default", "probs"):
        doc = ok(
            server.post(
                "/v1/models/colors:predict",
                json={"signature_name": sig, "instances": [pixels("red")]},
            )
        )
        assert argmax_label(doc["predictions"][0]) == "red"


def test_predict_b64_images(server: Any) -> None:
    doc = ok(
        server.post(
            "/v1/models/colors:predict",
            json={
                "instances": [
                    b64(image("red")),
                    b64(image("green", "PNG")),
                    b64(image("blue", "WEBP")),
                ]
            },
        )
    )
    assert [argmax_label(p) for p in doc["predictions"]] == ["red", "green", "blue"]
    doc = ok(
        server.post(
            "/v1/models/colors:predict",
            json={"instances": [{"images": b64(image("white", "BMP"))}]},
        )
    )
    assert argmax_label(doc["predictions"][0]) == "white"
    doc = ok(
        server.post(
            "/v1/models/colors:predict", json={"inputs": {"images": [b64(image("black", "GIF"))]}}
        )
    )
    assert argmax_label(doc["outputs"][0]) == "black"


def test_predict_top_k_gives_labels(server: Any) -> None:
    doc = ok(
        server.post(
            "/v1/models/colors:predict", json={"instances": [b64(image("blue"))], "top_k": 2}
        )
    )
    (pred,) = doc["predictions"]
    assert pred["label"] == "blue" and pred["top_k"][0]["label"] == "blue"
    assert len(pred["top_k"]) == 2 and doc["model_version"] == "1"


def test_predict_fake_model(server: Any) -> None:
    doc = ok(server.post("/v1/models/fake:predict", json={"instances": [[1, 2, 3, 4]]}))
    (pred,) = doc["predictions"]  # two outputs: one object per row
    assert pred["outputs"] == [2, 4, 6, 8] and len(pred["scores"]) == 4
    doc = ok(server.post("/v1/models/fake:predict", json={"inputs": {"x": [[0, 0, 0, 1]]}}))
    assert doc["outputs"]["outputs"] == [[0, 0, 0, 2]]


# ---- classify and regress -------------------------------------------------------------------


def test_classify(server: Any) -> None:
    doc = ok(
        server.post(
            "/v1/models/colors:classify",
            json={
                "examples": [
                    {"images": b64(image("red"))},
                    {"image_bytes": b64(image("green", "PNG"))},
                ]
            },
        )
    )
    result = doc["result"]
    assert len(result) == 2
    for row, colour in zip(result, ("red", "green"), strict=True):
        assert row[0][0] == colour
        assert sorted(pair[0] for pair in row) == sorted(LABELS)
        scores = [pair[1] for pair in row]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4
    doc = ok(
        server.post(
            "/v1/models/fake:classify", json={"examples": [{"x": [0, 0, 9, 0]}], "top_k": 2}
        )
    )
    assert [pair[0] for pair in doc["result"][0]] == ["c", "a"]


def test_regress_is_refused_clearly(server: Any) -> None:
    r = server.post("/v1/models/colors:regress", json={"examples": [{"x": 1.0}]})
    assert r.status_code == 400  # TF Serving: INVALID_ARGUMENT
    assert "regress" in r.json()["error"]
    assert ":classify" in r.json()["error"]
    r = server.post("/v1/models/plain:regress", json={"examples": [{"x": [1, 2, 3, 4]}]})
    assert r.status_code == 400
    assert "regress" in r.json()["error"] and "classif" not in r.json()["error"]
    r = server.post("/v1/models/plain:classify", json={"examples": [{"x": [1, 2, 3, 4]}]})
    assert r.status_code == 400 and "not a classifier" in r.json()["error"]
    r = server.post("/v1/models/nope:regress", json={"examples": [{"x": 1.0}]})
    assert r.status_code == 404


# ---- image uploads --------------------------------------------------------------------------


@pytest.mark.parametrize(("colour", "fmt", "ctype"), [
    ("red", "JPEG", "image/jpeg"), ("green", "PNG", "image/png"),
    ("blue", "WEBP", "image/webp"), ("white", "BMP", "image/bmp"),
    ("black", "GIF", "image/gif"),
])  # fmt: skip
def test_upload_raw_image(server: Any, colour: str, fmt: str, ctype: str) -> None:
    doc = ok(
        server.post(
            "/v1/models/colors:predict", content=image(colour, fmt), headers={"Content-Type": ctype}
        )
    )
    (pred,) = doc["predictions"]
    assert pred["label"] == colour and doc["model_version"] == "1"
    assert len(pred["top_k"]) == 5 and len(pred["probabilities"]) == 5


def test_upload_raw_image_top_k(server: Any) -> None:
    doc = ok(
        server.post(
            "/v1/models/colors/versions/1:predict?top_k=1",
            content=image("red"),
            headers={"Content-Type": "image/jpeg"},
        )
    )
    assert [t["label"] for t in doc["predictions"][0]["top_k"]] == ["red"]


def test_upload_multipart_several_files(server: Any) -> None:
    files = [
        ("file", ("a.jpg", image("blue"), "image/jpeg")),
        ("file", ("b.png", image("red", "PNG"), "image/png")),
        ("other", ("c.webp", image("green", "WEBP"), "image/webp")),
        ("file", ("d.gif", image("black", "GIF"), "application/octet-stream")),
    ]
    doc = ok(server.post("/v1/models/colors:predict", files=files, data={"note": "ignored"}))
    assert [p["label"] for p in doc["predictions"]] == ["blue", "red", "green", "black"]


def test_upload_multipart_top_k_field(server: Any) -> None:
    # A top_k form field (curl -F file=@a.jpg -F top_k=1) counts as ?top_k= does.
    files = [("file", ("a.jpg", image("blue"), "image/jpeg"))]
    doc = ok(server.post("/v1/models/colors:predict?top_k=3", files=files, data={"top_k": "1"}))
    assert [t["label"] for t in doc["predictions"][0]["top_k"]] == ["blue"]
    # An HTML form's empty field is no top_k at all.
    doc = ok(server.post("/v1/models/colors:predict?top_k=2", files=files, data={"top_k": ""}))
    assert len(doc["predictions"][0]["top_k"]) == 2


# ---- bad requests ---------------------------------------------------------------------------

JPEG = image("red")
BIG = image("red", "PNG", size=(1200, 1000))  # over --max_image_pixels=1000000
TRUNCATED = image("red", size=(400, 300))[:300]

# (id, method, path, request kwargs, status, text the error must contain)
BAD: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    (
        "malformed-json",
        "POST",
        "/v1/models/colors:predict",
        {"content": b'{"instances": [1,', "headers": {"Content-Type": "application/json"}},
        400,
        "JSON Parse error",
    ),
    ("json-not-object", "POST", "/v1/models/colors:predict", {"json": [1, 2]}, 400, "JSON object"),
    (
        "deeply-nested-json",
        "POST",
        "/v1/models/colors:predict",
        {"content": b"[" * 50_000},
        400,
        "JSON Parse error",
    ),
    (
        "empty-json-body",
        "POST",
        "/v1/models/colors:predict",
        {"headers": {"Content-Type": "application/json"}},
        400,
        "empty",
    ),
    (
        "both-keys",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"instances": [pixels("red")], "inputs": [pixels("red")]}},
        400,
        "Not both 'inputs' and 'instances'",
    ),
    (
        "neither-key",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"signature_name": ""}},
        400,
        "Missing 'inputs' or 'instances'",
    ),
    (
        "wrong-shape",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"instances": [[1, 2, 3]]}},
        400,
        "expects [-1,16,16,3]",
    ),
    (
        "wrong-row-size",
        "POST",
        "/v1/models/fake:predict",
        {"json": {"inputs": [[1, 2, 3]]}},
        400,
        "shape [1,3]",
    ),
    (
        "ragged",
        "POST",
        "/v1/models/fake:predict",
        {"json": {"instances": [[1, 2, 3, 4], [1, 2]]}},
        400,
        "ragged",
    ),
    (
        "wrong-dtype-strings",
        "POST",
        "/v1/models/fake:predict",
        {"json": {"instances": [["a", "b", "c", "d"]]}},
        400,
        "expects float32",
    ),
    (
        "wrong-dtype-mixed",
        "POST",
        "/v1/models/fake:predict",
        {"json": {"instances": [[1, "b", 3, 4]]}},
        400,
        "same type",
    ),
    (
        "nan-pixels",
        "POST",
        "/v1/models/colors:predict",
        {
            "content": json.dumps({"instances": [with_nan(pixels("red"))]}),  # a NaN literal
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "NaN",
    ),
    (
        "unknown-signature",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"signature_name": "nope", "instances": [pixels("red")]}},
        400,
        'signature name: "nope" not found',
    ),
    (
        "signature-not-a-string",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"signature_name": 3, "instances": [pixels("red")]}},
        400,
        "must be a string",
    ),
    (
        "unknown-input",
        "POST",
        "/v1/models/fake:predict",
        {"json": {"inputs": {"y": [[1, 2, 3, 4]]}}},
        400,
        "alias not found",
    ),
    (
        "unknown-model",
        "POST",
        "/v1/models/nope:predict",
        {"json": {"instances": [1]}},
        404,
        "Servable not found for request: Latest(nope)",
    ),
    ("unknown-model-status", "GET", "/v1/models/nope", {}, 404, "nope"),
    ("unknown-model-metadata", "GET", "/v1/models/nope/metadata", {}, 404, "Latest(nope)"),
    (
        "unknown-version",
        "POST",
        "/v1/models/colors/versions/9:predict",
        {"json": {"instances": [pixels("red")]}},
        404,
        "Specific(colors, 9)",
    ),
    ("unknown-version-status", "GET", "/v1/models/colors/versions/9", {}, 404, "version 9"),
    (
        "non-numeric-version",
        "GET",
        "/v1/models/colors/versions/one",
        {},
        400,
        "Failed to convert version: one",
    ),
    (
        "unknown-label",
        "POST",
        "/v1/models/colors/labels/stable:predict",
        {"json": {"instances": [pixels("red")]}},
        400,
        "label: stable",
    ),
    ("unknown-label-status", "GET", "/v1/models/colors/labels/stable", {}, 400, "label: stable"),
    (
        "version-and-label",
        "POST",
        "/v1/models/colors/versions/1/labels/stable:predict",
        {"json": {"instances": [pixels("red")]}},
        404,
        "Malformed request",
    ),
    (
        "invalid-base64",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"instances": [{"b64": "not*base64!"}]}},
        400,
        "base64",
    ),
    (
        "not-an-image",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"instances": [b64(b"hello, world")]}},
        400,
        "image 0: bytes are not an image",
    ),
    (
        "truncated-image-b64",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"instances": [b64(JPEG), b64(TRUNCATED)]}},
        400,
        "image 1: cannot decode",
    ),
    (
        "truncated-image-raw",
        "POST",
        "/v1/models/colors:predict",
        {"content": TRUNCATED, "headers": {"Content-Type": "image/jpeg"}},
        400,
        "cannot decode",
    ),
    (
        "over-pixel-limit",
        "POST",
        "/v1/models/colors:predict",
        {"content": BIG, "headers": {"Content-Type": "image/png"}},
        400,
        "1200x1000 = 1200000 pixels, over the limit of 1000000",
    ),
    (
        "decompression-bomb",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"instances": [b64(png_claiming(100_000, 100_000))]}},
        400,
        "over the limit",
    ),
    (
        "raw-not-an-image",
        "POST",
        "/v1/models/colors:predict",
        {"content": b"GIF? no", "headers": {"Content-Type": "image/gif"}},
        400,
        "not an image",
    ),
    (
        "empty-image-body",
        "POST",
        "/v1/models/colors:predict",
        {"headers": {"Content-Type": "image/jpeg"}},
        400,
        "empty",
    ),
    (
        "image-for-a-tensor-model",
        "POST",
        "/v1/models/fake:predict",
        {"content": JPEG, "headers": {"Content-Type": "image/jpeg"}},
        400,
        "preprocessing",
    ),
    (
        "wrong-content-type",
        "POST",
        "/v1/models/colors:predict",
        {"content": b"<instances/>", "headers": {"Content-Type": "application/xml"}},
        400,
        "unsupported Content-Type",
    ),
    (
        "image-to-classify",
        "POST",
        "/v1/models/colors:classify",
        {"content": JPEG, "headers": {"Content-Type": "image/jpeg"}},
        400,
        "takes JSON",
    ),
    (
        "multipart-without-files",
        "POST",
        "/v1/models/colors:predict",
        {"data": {"a": "b"}, "files": [("x", ("x.txt", b"", "text/plain"))]},
        400,
        "image 0",
    ),
    (
        "multipart-no-file-parts",
        "POST",
        "/v1/models/colors:predict",
        {
            "content": b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--B--\r\n',
            "headers": {"Content-Type": "multipart/form-data; boundary=B"},
        },
        400,
        "no file parts",
    ),
    (
        "multipart-malformed",
        "POST",
        "/v1/models/colors:predict",
        {"content": b"no boundary here", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        "",
    ),
    (
        "classify-no-examples",
        "POST",
        "/v1/models/colors:classify",
        {"json": {"x": 1}},
        400,
        "'examples' must be a non-empty list",
    ),
    (
        "top-k-zero",
        "POST",
        "/v1/models/colors:predict?top_k=0",
        {"content": JPEG, "headers": {"Content-Type": "image/jpeg"}},
        400,
        "top_k",
    ),
    (
        "top-k-infinite",  # a JSON number too large for a float parses as infinity
        "POST",
        "/v1/models/colors:predict",
        {"content": b'{"instances": [' + json.dumps(b64(JPEG)).encode() + b'], "top_k": 1e400}',
         "headers": {"Content-Type": "application/json"}},
        400,
        "top_k must be a positive integer",
    ),
    (
        "top-k-boolean",
        "POST",
        "/v1/models/colors:predict",
        {"json": {"instances": [b64(JPEG)], "top_k": True}},
        400,
        "top_k must be a positive integer",
    ),
    (
        "image-without-content-type",
        "POST",
        "/v1/models/colors:predict",
        {"content": JPEG},
        400,
        "the body is a JPEG image but its Content-Type is missing",
    ),
    (
        "image-as-form-urlencoded",  # curl --data-binary @photo.jpg without -H
        "POST",
        "/v1/models/colors:predict",
        {"content": JPEG, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        400,
        "Content-Type image/*",
    ),
    ("get-predict", "GET", "/v1/models/colors:predict", {}, 404, "Malformed request"),
    ("post-status", "POST", "/v1/models/colors", {"json": {}}, 404, "Malformed request"),
    ("bad-verb", "POST", "/v1/models/colors:explain", {"json": {}}, 404, "Malformed request"),
    ("put", "PUT", "/v1/models/colors:predict", {"json": {}}, 405, "PUT"),
    ("unknown-path", "GET", "/v1/nothing", {}, 404, ""),
    # Answered, not redirected to /v1/models/ (TF Serving answers 404 here).
    ("no-model-name", "GET", "/v1/models", {}, 404, "Malformed request"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "message"),
    [row[1:] for row in BAD],
    ids=[row[0] for row in BAD],
)
def test_bad_requests(
    server: Any, method: str, path: str, kwargs: dict[str, Any], status: int, message: str
) -> None:
    r = server.http.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert message in body["error"]
    assert "Traceback" not in r.text
    # ...and the server is still up and serving.
    assert server.alive()
    assert server.states("colors") == {"1": "AVAILABLE"}


def test_still_serving_after_everything(server: Any) -> None:
    doc = ok(
        server.post(
            "/v1/models/colors:predict",
            content=image("green"),
            headers={"Content-Type": "image/jpeg"},
        )
    )
    assert doc["predictions"][0]["label"] == "green"
    assert "Traceback" not in server.log()


# ---- overload and deadlines -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory, servers_in: Any) -> Iterator[Any]:
    """A slow model (0.5 s per batch), one batch thread, room for one waiting batch."""
    root = tmp_path_factory.mktemp("tight")
    write_fake_version(root / "slow", 1, predict_seconds=0.5)
    params = root / "batching.txt"
    params.write_text(
        "max_batch_size { value: 1 } batch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }\n"
    )
    with servers_in(root) as start:
        yield start(
            "--model_name=slow",
            f"--model_base_path={root / 'slow'}",
            f"--batching_parameters_file={params}",
            "--rest_api_timeout_in_ms=700",
            wait_for=("slow",),
            fake_runtime=True,
        )


def test_overload_gives_429_and_late_requests_504(tight: Any, wait: Any) -> None:
    def call(i: int) -> httpx.Response:
        with httpx.Client(base_url=tight.url, timeout=30) as c:
            return c.post("/v1/models/slow:predict", json={"instances": [[i, 0, 0, 0]]})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(8)))
    codes = sorted(r.status_code for r in responses)
    # One runs (0.5 s), one waits for it and misses its 0.7 s deadline, the rest are refused.
    assert set(codes) <= {200, 429, 504}, [r.text for r in responses]
    assert 429 in codes and 504 in codes, codes
    for r in responses:
        if r.status_code == 429:
            assert "queue" in r.json()["error"] and "full" in r.json()["error"]
        if r.status_code == 504:
            assert "Deadline exceeded" in r.json()["error"]
    # Once the queue drains the server answers again.
    r = wait(lambda: (r := call(1)).status_code == 200 and r, 10, "a 200 after the burst")
    assert r.json()["predictions"] == [[2, 0, 0, 0]]
