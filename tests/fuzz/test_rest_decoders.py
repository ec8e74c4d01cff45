"""Every REST request decoder under hostile input (issue 22, Tests): TF Serving's JSON
(:predict, :classify, :regress), KServe V2 JSON and binary, raw and multipart uploads, gzip.

Properties: never a 5xx; a 4xx carries a JSON ``{"error": ...}``; and no request makes the
server allocate more than a small multiple of its size plus the decoded-image budget
(tracemalloc, every thread)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
from conftest import Live, allocation_bound
from hypothesis import given, note
from hypothesis import strategies as st
from strategies import image_bytes, json_values, tf_rest_bodies, v2_bodies

MODELS = st.sampled_from(["colours", "fake", "nope"])
VERSIONS = st.sampled_from(["", "/versions/1", "/versions/7", "/labels/stable"])


def _check(live: Live, method: str, path: str, body: bytes,
           headers: dict[str, str] | None = None) -> httpx.Response:
    note(f"{method} {path} {headers} body[{len(body)}]={body[:300]!r}")
    r, peak = live.measure(lambda: live.http.request(method, path, content=body,
                                                     headers=headers or {}))
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert isinstance(r.json().get("error"), str), r.text[:200]
    assert peak <= allocation_bound(len(body)), (peak, len(body))
    return r


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


@given(doc=tf_rest_bodies(), model=MODELS, version=VERSIONS,
       verb=st.sampled_from([":predict", ":predict", ":classify", ":regress"]),
       ctype=st.sampled_from(["application/json", "", "text/plain"]))
def test_tf_serving_json(live: Live, doc: Any, model: str, version: str, verb: str,
                         ctype: str) -> None:
    _check(live, "POST", f"/v1/models/{model}{version}{verb}", _dump(doc),
           {"content-type": ctype} if ctype else {})


@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
       model=MODELS, encoding=st.sampled_from(["", "gzip", "deflate", "br", "gzip, gzip"]))
def test_tf_serving_json_bytes(live: Live, raw: bytes, model: str, encoding: str) -> None:
    """Bytes that are not JSON, or not what they claim to be encoded as."""
    headers = {"content-type": "application/json"}
    if encoding:
        headers["content-encoding"] = encoding
    _check(live, "POST", f"/v1/models/{model}:predict", raw, headers)


@given(doc=tf_rest_bodies(), model=MODELS)
def test_gzip_json(live: Live, doc: Any, model: str) -> None:
    _check(live, "POST", f"/v1/models/{model}:predict", gzip.compress(_dump(doc)),
           {"content-type": "application/json", "content-encoding": "gzip"})


@given(body=v2_bodies(binary=False), model=MODELS,
       version=st.sampled_from(["", "/versions/1", "/versions/3"]))
def test_v2_json(live: Live, body: tuple[Any, bytes], model: str, version: str) -> None:
    doc, _ = body
    _check(live, "POST", f"/v2/models/{model}{version}/infer", _dump(doc),
           {"content-type": "application/json"})


@given(body=v2_bodies(binary=True), model=MODELS,
       length=st.sampled_from(["right", "right", "short", "long", "garbage", "negative"]))
def test_v2_binary(live: Live, body: tuple[Any, bytes], model: str, length: str) -> None:
    doc, blob = body
    header = _dump(doc)
    n = {"right": str(len(header)), "short": str(max(0, len(header) - 3)),
         "long": str(len(header) + len(blob) + 5), "garbage": "12abc",
         "negative": "-4"}[length]
    _check(live, "POST", f"/v2/models/{model}/infer", header + blob,
           {"content-type": "application/octet-stream", "inference-header-content-length": n})


@given(data=image_bytes() | st.binary(max_size=200), model=MODELS,
       ctype=st.sampled_from(["image/jpeg", "image/png", "image/anything"]),
       top_k=st.sampled_from(["", "?top_k=3", "?top_k=0", "?top_k=x", "?top_k=99999999999"]))
def test_raw_upload(live: Live, data: bytes, model: str, ctype: str, top_k: str) -> None:
    _check(live, "POST", f"/v1/models/{model}:predict{top_k}", data, {"content-type": ctype})


@given(parts=st.lists(st.tuples(st.sampled_from(["file", "image", "top_k", "x"]),
                                image_bytes() | st.binary(max_size=50),
                                st.booleans()), max_size=4),
       model=MODELS, boundary=st.sampled_from(["b0undary", "x" * 70, ""]),
       damage=st.sampled_from(["none", "none", "truncate", "no-end"]))
def test_multipart_upload(live: Live, parts: list[tuple[str, bytes, bool]], model: str,
                          boundary: str, damage: str) -> None:
    b = boundary.encode()
    body = b""
    for name, data, is_file in parts:
        disposition = f'form-data; name="{name}"' + ('; filename="a.jpg"' if is_file else "")
        body += (b"--" + b + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n"
                 + (b"Content-Type: image/jpeg\r\n" if is_file else b"") + b"\r\n" + data
                 + b"\r\n")
    body += b"--" + b + b"--\r\n"
    if damage == "truncate":
        body = body[: len(body) // 2]
    elif damage == "no-end":
        body = body[: -len(b"--" + b + b"--\r\n")]
    _check(live, "POST", f"/v1/models/{model}:predict", body,
           {"content-type": f"multipart/form-data; boundary={boundary}"})


@given(doc=json_values(), path=st.sampled_from([
    "/v1/models/colours", "/v1/models/colours/metadata", "/v2/models/colours",
    "/v2/models/colours/ready", "/v2/models/colours/config", "/v2", "/v2/health/ready"]))
def test_reads_with_bodies(live: Live, doc: Any, path: str) -> None:
    """GET routes with a body they do not expect."""
    _check(live, "GET", path, _dump(doc))
