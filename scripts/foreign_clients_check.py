#!/usr/bin/env python3
"""Check a running Corolla server with clients Corolla did not write.

The TF Serving gRPC API through the official ``tensorflow-serving-api`` stubs (and
``tf.make_tensor_proto`` / ``tf.make_ndarray``), TF Serving's REST API as its public docs
describe it (plain ``requests``), and the KServe V2 REST and gRPC APIs through
``tritonclient.http`` and ``tritonclient.grpc``. Prints one ``PASS``/``FAIL`` line per check and
exits non-zero when any check fails.

These clients are not Corolla dependencies: install them in a venv of their own, outside the
repository (tensorflow is several hundred MB and takes minutes)::

    python3 -m venv /tmp/foreign-venv
    /tmp/foreign-venv/bin/pip install tensorflow-serving-api 'tritonclient[all]' requests

Then start a server with the embedded flowers model and run the checks against it::

    .venv/bin/corolla serve --host 127.0.0.1 --port 18500 --rest_api_port 18501 &
    /tmp/foreign-venv/bin/python scripts/foreign_clients_check.py \
        --host 127.0.0.1 --grpc-port 18500 --rest-port 18501

``--label stable`` also checks version labels, for a server started with a ``models.config``
that gives the model ``version_labels { key: "stable" value: 1 }``. Photos are read from
``--images`` (default ``../shared/datasets/flower_photos``, one folder per class).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import numpy as np
import requests
import tensorflow as tf
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tritonclient.utils import InferenceServerException

CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, *, extension: bool = False
          ) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register a check. ``extension`` checks use Triton-only APIs outside KServe V2 (which
    Corolla does not claim): their outcome is printed as INFO and never fails the run."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> None:
            try:
                detail = fn()
                ok, msg = True, str(detail or "")
            except Exception as exc:
                ok, msg = False, f"{type(exc).__name__}: {exc}"
                if os.environ.get("CHECK_TRACEBACK"):
                    traceback.print_exc()
            if extension:
                print(f"INFO  {name}  {'supported' if ok else 'not supported'}"
                      + (f" ({msg})" if msg else ""), flush=True)
                return
            RESULTS.append((name, ok, msg))
            word = "PASS" if ok else "FAIL"
            print(f"{word}  {name}" + (f"  ({msg})" if msg else ""), flush=True)

        CHECKS.append(run)
        return run

    return wrap


CHECKS: list[Callable[[], None]] = []


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def expect_rpc_error(fn: Callable[[], Any], code: grpc.StatusCode) -> str:
    try:
        fn()
    except grpc.RpcError as exc:
        expect(exc.code() == code, f"expected {code.name}, got {exc.code().name}: {exc.details()}")
        return f"{code.name}: {exc.details()}"
    raise AssertionError(f"expected {code.name}, the call succeeded")


# ---- inputs -----------------------------------------------------------------------------


def photos(root: Path, per_class: int) -> list[tuple[str, bytes]]:
    out = []
    for cls in CLASSES:
        files = sorted((root / cls).glob("*.jpg"))[:per_class]
        out += [(cls, f.read_bytes()) for f in files]
    return out


def preprocess(jpeg: bytes) -> np.ndarray:
    """The flowers model's preprocessing, done by the client: 224x224 RGB, (x - 127) / 128."""
    img = tf.io.decode_jpeg(jpeg, channels=3)
    img = tf.image.resize(tf.cast(img, tf.float32), (224, 224), method="bilinear")
    return ((img.numpy() - 127.0) / 128.0).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--grpc-port", type=int, default=8500)
    ap.add_argument("--rest-port", type=int, default=8501)
    ap.add_argument("--model", default="flowers")
    ap.add_argument("--label", default="", help="a version label the server has for version 1")
    ap.add_argument("--images", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared/datasets/flower_photos")
    args = ap.parse_args()

    model = args.model
    rest = f"http://{args.host}:{args.rest_port}"
    channel = grpc.insecure_channel(f"{args.host}:{args.grpc_port}")
    pred = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)

    samples = photos(args.images, 2)
    jpegs = [b for _, b in samples]
    truth = [CLASSES.index(c) for c, _ in samples]
    batch = np.stack([preprocess(b) for b in jpegs[:4]])
    state: dict[str, Any] = {}

    def predict_request(**spec: Any) -> Any:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = spec.pop("name", model)
        if "version" in spec:
            req.model_spec.version.value = spec.pop("version")
        if "label" in spec:
            req.model_spec.version_label = spec.pop("label")
        if "signature_name" in spec:
            req.model_spec.signature_name = spec.pop("signature_name")
        return req

    # ---- TF Serving gRPC (official stubs) ----------------------------------------------

    @check("tfs-grpc GetModelMetadata signature_def (SignatureDefMap unpacks)")
    def _() -> str:
        req = get_model_metadata_pb2.GetModelMetadataRequest()
        req.model_spec.name = model
        req.metadata_field.append("signature_def")
        resp = pred.GetModelMetadata(req, timeout=10)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        expect(resp.metadata["signature_def"].Unpack(sdm), "Any does not hold a SignatureDefMap")
        sig = sdm.signature_def["serving_default"]
        expect(sig.method_name == "tensorflow/serving/predict", sig.method_name)
        inp = sig.inputs["images"]
        shape = [d.size for d in inp.tensor_shape.dim]
        expect(inp.dtype == tf.float32.as_datatype_enum, f"dtype {inp.dtype}")
        expect(shape == [-1, 224, 224, 3], f"shape {shape}")
        expect(resp.model_spec.name == model and resp.model_spec.version.value == 1,
               str(resp.model_spec))
        state["signature"] = sig
        return f"inputs {list(sig.inputs)} {shape}, outputs {list(sig.outputs)}"

    @check("tfs-grpc GetModelStatus (name only, and version 1)")
    def _() -> str:
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = model
        resp = models.GetModelStatus(req, timeout=10)
        states = [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                   s.status.error_code) for s in resp.model_version_status]
        expect((1, "AVAILABLE", 0) in states, str(states))
        req.model_spec.version.value = 1
        resp = models.GetModelStatus(req, timeout=10)
        expect(len(resp.model_version_status) == 1, str(resp))
        return str(states)

    @check("tfs-grpc GetModelStatus unknown model -> NOT_FOUND")
    def _() -> str:
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "no_such_model"
        return expect_rpc_error(lambda: models.GetModelStatus(req, timeout=10),
                                grpc.StatusCode.NOT_FOUND)

    def float_predict(req: Any) -> np.ndarray:
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.float32))
        resp = pred.Predict(req, timeout=30)
        expect(resp.model_spec.name == model, f"model_spec.name {resp.model_spec.name!r}")
        expect(resp.model_spec.version.value == 1, f"version {resp.model_spec.version.value}")
        out = tf.make_ndarray(resp.outputs["probabilities"])
        expect(out.shape == (len(batch), 5), f"shape {out.shape}")
        expect(np.allclose(out.sum(axis=1), 1.0, atol=1e-3), f"row sums {out.sum(axis=1)}")
        return out

    @check("tfs-grpc Predict float32 batch (make_tensor_proto / make_ndarray), name only")
    def _() -> str:
        resp_probs = float_predict(predict_request())
        state["float_probs"] = resp_probs
        top = resp_probs.argmax(axis=1).tolist()
        return f"top-1 {top}, truth {truth[:len(batch)]}"

    @check("tfs-grpc Predict response model_spec.signature_name is serving_default")
    def _() -> str:
        req = predict_request()
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(batch[:1], dtype=tf.float32))
        resp = pred.Predict(req, timeout=30)
        expect(resp.model_spec.signature_name == "serving_default",
               f"signature_name {resp.model_spec.signature_name!r}")
        return ""

    @check("tfs-grpc Predict model_spec.version = 1")
    def _() -> None:
        float_predict(predict_request(version=1))

    @check("tfs-grpc Predict model_spec.signature_name = serving_default")
    def _() -> None:
        float_predict(predict_request(signature_name="serving_default"))

    @check("tfs-grpc Predict output_filter = [probabilities]")
    def _() -> None:
        req = predict_request()
        req.output_filter.append("probabilities")
        float_predict(req)

    if args.label:
        @check(f"tfs-grpc Predict model_spec.version_label = {args.label}")
        def _() -> None:
            float_predict(predict_request(label=args.label))

    # TF Serving: ServerCore::GetModelVersionForLabel answers INVALID_ARGUMENT.
    @check("tfs-grpc Predict unknown version_label -> INVALID_ARGUMENT")
    def _() -> str:
        req = predict_request(label="no-such-label")
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(batch[:1], dtype=tf.float32))
        return expect_rpc_error(lambda: pred.Predict(req, timeout=30),
                                grpc.StatusCode.INVALID_ARGUMENT)

    @check("tfs-grpc GetModelStatus unknown version_label -> INVALID_ARGUMENT")
    def _() -> str:
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = model
        req.model_spec.version_label = "no-such-label"
        return expect_rpc_error(lambda: models.GetModelStatus(req, timeout=10),
                                grpc.StatusCode.INVALID_ARGUMENT)

    @check("tfs-grpc Predict DT_STRING encoded JPEGs into the float input (Corolla extension)")
    def _() -> str:
        req = predict_request()
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(jpegs, dtype=tf.string))
        resp = pred.Predict(req, timeout=60)
        out = tf.make_ndarray(resp.outputs["probabilities"])
        expect(out.shape == (len(jpegs), 5), f"shape {out.shape}")
        top = out.argmax(axis=1)
        acc = float((top == np.array(truth)).mean())
        expect(acc >= 0.7, f"top-1 accuracy {acc} on {len(jpegs)} photos")
        if "float_probs" in state:
            agree = (state["float_probs"].argmax(axis=1) == top[:len(batch)]).mean()
            expect(agree >= 0.75, f"string and float paths agree on {agree:.0%}")
        return f"top-1 accuracy {acc:.0%} on {len(jpegs)} photos"

    @check("tfs-grpc Predict DT_STRING shape [N, 1]")
    def _() -> None:
        req = predict_request()
        req.inputs["images"].CopyFrom(
            tf.make_tensor_proto(np.array(jpegs[:2], dtype=object).reshape(2, 1), dtype=tf.string))
        out = tf.make_ndarray(pred.Predict(req, timeout=60).outputs["probabilities"])
        expect(out.shape == (2, 5), f"shape {out.shape}")

    @check("tfs-grpc Predict unknown model -> NOT_FOUND")
    def _() -> str:
        req = predict_request(name="no_such_model")
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(batch[:1], dtype=tf.float32))
        return expect_rpc_error(lambda: pred.Predict(req, timeout=10), grpc.StatusCode.NOT_FOUND)

    @check("tfs-grpc Predict unknown version -> NOT_FOUND")
    def _() -> str:
        req = predict_request(version=999)
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(batch[:1], dtype=tf.float32))
        return expect_rpc_error(lambda: pred.Predict(req, timeout=10), grpc.StatusCode.NOT_FOUND)

    @check("tfs-grpc Predict bad shape -> INVALID_ARGUMENT")
    def _() -> str:
        req = predict_request()
        req.inputs["images"].CopyFrom(
            tf.make_tensor_proto(np.zeros((1, 10, 10, 3), np.float32)))
        return expect_rpc_error(lambda: pred.Predict(req, timeout=10),
                                grpc.StatusCode.INVALID_ARGUMENT)

    @check("tfs-grpc Predict unknown input alias -> INVALID_ARGUMENT")
    def _() -> str:
        req = predict_request()
        req.inputs["nope"].CopyFrom(tf.make_tensor_proto(batch[:1], dtype=tf.float32))
        return expect_rpc_error(lambda: pred.Predict(req, timeout=10),
                                grpc.StatusCode.INVALID_ARGUMENT)

    @check("tfs-grpc Predict unknown signature_name -> error")
    def _() -> str:
        req = predict_request(signature_name="nope")
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(batch[:1], dtype=tf.float32))
        try:
            pred.Predict(req, timeout=10)
        except grpc.RpcError as exc:
            expect(exc.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.FAILED_PRECONDITION),
                   f"{exc.code().name}: {exc.details()}")
            return f"{exc.code().name}: {exc.details()}"
        raise AssertionError("an unknown signature was accepted")

    @check("tfs-grpc Predict float64 tensor for a float input")
    def _() -> str:
        req = predict_request()
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(batch[:1].astype(np.float64)))
        try:
            out = tf.make_ndarray(pred.Predict(req, timeout=30).outputs["probabilities"])
        except grpc.RpcError as exc:
            # TF Serving refuses a dtype that is not the signature's with INVALID_ARGUMENT.
            expect(exc.code() == grpc.StatusCode.INVALID_ARGUMENT,
                   f"{exc.code().name}: {exc.details()}")
            return f"refused: {exc.code().name}"
        expect(out.shape == (1, 5), f"shape {out.shape}")
        return "accepted"

    @check("tfs-grpc Classify with tf.Example image bytes (labels)")
    def _() -> str:
        req = classification_pb2.ClassificationRequest()
        req.model_spec.name = model
        for b in jpegs[:2]:
            ex = req.input.example_list.examples.add()
            ex.features.feature["images"].bytes_list.value.append(b)
        resp = pred.Classify(req, timeout=60)
        rows = [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications]
        expect(len(rows) == 2 and all(rows), str(rows))
        expect(all(lbl in CLASSES for row in rows for lbl, _ in row), str(rows))
        return f"{[row[0] for row in rows]}"

    @check("tfs-grpc Regress on a classifier -> INVALID_ARGUMENT")
    def _() -> str:
        req = regression_pb2.RegressionRequest()
        req.model_spec.name = model
        req.input.example_list.examples.add().features.feature["images"].bytes_list.value.append(
            jpegs[0])
        return expect_rpc_error(lambda: pred.Regress(req, timeout=10),
                                grpc.StatusCode.INVALID_ARGUMENT)

    # ---- TF Serving REST (public docs) --------------------------------------------------

    def rest_json(method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = requests.request(method, rest + path, json=body, timeout=60)
        expect(r.status_code == status, f"{method} {path}: HTTP {r.status_code} {r.text[:300]}")
        expect(r.headers.get("content-type", "").startswith("application/json"),
               f"content-type {r.headers.get('content-type')}")
        return json.loads(r.text)  # the docs' parser: NaN/Infinity allowed

    @check("tfs-rest GET /v1/models/NAME (model status)")
    def _() -> str:
        doc = rest_json("GET", f"/v1/models/{model}")
        vs = doc["model_version_status"]
        expect(any(v["version"] == "1" and v["state"] == "AVAILABLE"
                   and v["status"]["error_code"] == "OK" for v in vs), str(doc))
        return json.dumps(doc)

    @check("tfs-rest GET /v1/models/NAME/versions/1")
    def _() -> None:
        doc = rest_json("GET", f"/v1/models/{model}/versions/1")
        expect([v["version"] for v in doc["model_version_status"]] == ["1"], str(doc))

    if args.label:
        @check(f"tfs-rest GET /v1/models/NAME/labels/{args.label} and :predict")
        def _() -> None:
            doc = rest_json("GET", f"/v1/models/{model}/labels/{args.label}")
            expect([v["version"] for v in doc["model_version_status"]] == ["1"], str(doc))
            out = rest_json("POST", f"/v1/models/{model}/labels/{args.label}:predict",
                            {"instances": batch[:1].tolist()})
            expect(np.asarray(out["predictions"]).shape == (1, 5), str(out)[:200])

    @check("tfs-rest GET /v1/models/NAME/metadata (signature_def shape)")
    def _() -> None:
        for path in (f"/v1/models/{model}/metadata", f"/v1/models/{model}/versions/1/metadata"):
            doc = rest_json("GET", path)
            expect(doc["model_spec"]["name"] == model and doc["model_spec"]["version"] == "1",
                   str(doc["model_spec"]))
            sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
            dims = [d["size"] for d in sig["inputs"]["images"]["tensor_shape"]["dim"]]
            expect(sig["inputs"]["images"]["dtype"] == "DT_FLOAT", str(sig["inputs"]))
            expect(dims == ["-1", "224", "224", "3"], str(dims))
            expect(sig["method_name"] == "tensorflow/serving/predict", sig["method_name"])

    @check("tfs-rest :predict row format {instances: [...]} -> {predictions}")
    def _() -> str:
        doc = rest_json("POST", f"/v1/models/{model}:predict", {"instances": batch.tolist()})
        expect(set(doc) == {"predictions"}, f"keys {sorted(doc)}")
        p = np.asarray(doc["predictions"])
        expect(p.shape == (len(batch), 5), f"shape {p.shape}")
        if "float_probs" in state:
            expect(np.allclose(p, state["float_probs"], atol=1e-4), "REST and gRPC differ")
        return f"top-1 {p.argmax(axis=1).tolist()}"

    @check("tfs-rest :predict row format with named instances [{images: ...}]")
    def _() -> None:
        doc = rest_json("POST", f"/v1/models/{model}:predict",
                        {"instances": [{"images": x.tolist()} for x in batch[:2]]})
        expect(np.asarray(doc["predictions"]).shape == (2, 5), str(doc)[:200])

    @check("tfs-rest :predict columnar {inputs: {images: ...}} -> {outputs}")
    def _() -> None:
        doc = rest_json("POST", f"/v1/models/{model}:predict",
                        {"inputs": {"images": batch[:2].tolist()}})
        expect(set(doc) == {"outputs"}, f"keys {sorted(doc)}")
        expect(np.asarray(doc["outputs"]).shape == (2, 5), str(doc)[:200])

    @check("tfs-rest :predict columnar {inputs: <tensor>} (single input shorthand)")
    def _() -> None:
        doc = rest_json("POST", f"/v1/models/{model}:predict", {"inputs": batch[:1].tolist()})
        expect(np.asarray(doc["outputs"]).shape == (1, 5), str(doc)[:200])

    @check("tfs-rest :predict gzip-compressed JSON body (Content-Encoding: gzip)")
    def _() -> None:
        body = gzip.compress(json.dumps({"instances": batch[:2].tolist()}).encode())
        r = requests.post(f"{rest}/v1/models/{model}:predict", data=body, timeout=60,
                          headers={"Content-Type": "application/json",
                                   "Content-Encoding": "gzip"})
        expect(r.status_code == 200, f"HTTP {r.status_code} {r.text[:300]}")
        expect(np.asarray(r.json()["predictions"]).shape == (2, 5), r.text[:200])

    @check("tfs-rest :predict signature_name + /versions/1")
    def _() -> None:
        doc = rest_json("POST", f"/v1/models/{model}/versions/1:predict",
                        {"signature_name": "serving_default", "instances": batch[:1].tolist()})
        expect(np.asarray(doc["predictions"]).shape == (1, 5), str(doc)[:200])

    @check("tfs-rest :predict {b64} encoded JPEG instances (Corolla extension)")
    def _() -> str:
        b64 = [{"b64": base64.b64encode(b).decode()} for b in jpegs]
        doc = rest_json("POST", f"/v1/models/{model}:predict", {"instances": b64})
        p = np.asarray(doc["predictions"])
        expect(p.shape == (len(jpegs), 5), f"shape {p.shape}")
        acc = float((p.argmax(axis=1) == np.array(truth)).mean())
        expect(acc >= 0.7, f"accuracy {acc}")
        doc = rest_json("POST", f"/v1/models/{model}:predict",
                        {"instances": [{"images": x} for x in b64[:2]]})
        expect(np.asarray(doc["predictions"]).shape == (2, 5), "named b64 instances")
        return f"top-1 accuracy {acc:.0%}"

    @check("tfs-rest :classify {examples: [{images: {b64}}]} -> {result}")
    def _() -> None:
        b64 = [{"images": {"b64": base64.b64encode(b).decode()}} for b in jpegs[:2]]
        doc = rest_json("POST", f"/v1/models/{model}:classify", {"examples": b64})
        expect(len(doc["result"]) == 2, str(doc))
        expect(all(isinstance(lbl, str) and isinstance(s, float)
                   for row in doc["result"] for lbl, s in row), str(doc))

    @check("tfs-rest unknown model -> 404 {error: Servable not found ...}")
    def _() -> str:
        doc = rest_json("POST", "/v1/models/no_such_model:predict",
                        {"instances": batch[:1].tolist()}, status=404)
        expect(set(doc) == {"error"} and isinstance(doc["error"], str), str(doc))
        return doc["error"]

    @check("tfs-rest GET unknown model status -> 404 {error}")
    def _() -> str:
        doc = rest_json("GET", "/v1/models/no_such_model", status=404)
        expect(set(doc) == {"error"}, str(doc))
        return doc["error"]

    @check("tfs-rest unknown label -> 400 {error} (status and :predict)")
    def _() -> str:
        doc = rest_json("GET", f"/v1/models/{model}/labels/no-such-label", status=400)
        expect(set(doc) == {"error"}, str(doc))
        rest_json("POST", f"/v1/models/{model}/labels/no-such-label:predict",
                  {"instances": batch[:1].tolist()}, status=400)
        return doc["error"]

    @check("tfs-rest bad shape -> 400 {error}")
    def _() -> str:
        doc = rest_json("POST", f"/v1/models/{model}:predict",
                        {"instances": [[[[0.0, 0.0, 0.0]]]]}, status=400)
        expect(set(doc) == {"error"}, str(doc))
        return doc["error"]

    @check("tfs-rest malformed JSON -> 400 {error}")
    def _() -> str:
        r = requests.post(f"{rest}/v1/models/{model}:predict", data=b"{not json", timeout=10)
        expect(r.status_code == 400, f"HTTP {r.status_code}")
        doc = r.json()
        expect(set(doc) == {"error"}, str(doc))
        return doc["error"]

    @check("tfs-rest both instances and inputs -> 400 {error}")
    def _() -> None:
        rest_json("POST", f"/v1/models/{model}:predict",
                  {"instances": batch[:1].tolist(), "inputs": batch[:1].tolist()}, status=400)

    # ---- KServe V2: tritonclient.http --------------------------------------------------

    hc = thttp.InferenceServerClient(url=f"{args.host}:{args.rest_port}")

    @check("v2-http server live / ready / model ready")
    def _() -> None:
        expect(hc.is_server_live(), "not live")
        expect(hc.is_server_ready(), "not ready")
        expect(hc.is_model_ready(model), "model not ready")
        expect(hc.is_model_ready(model, "1"), "model version 1 not ready")
        expect(not hc.is_model_ready("no_such_model"), "unknown model ready")

    @check("v2-http server metadata")
    def _() -> str:
        md = hc.get_server_metadata()
        expect(isinstance(md.get("name"), str) and isinstance(md.get("version"), str), str(md))
        return str(md)

    @check("v2-http model metadata")
    def _() -> str:
        md = hc.get_model_metadata(model)
        inp = {t["name"]: t for t in md["inputs"]}["images"]
        expect(inp["datatype"] == "FP32" and inp["shape"] == [-1, 224, 224, 3], str(inp))
        expect(md["outputs"][0]["name"] == "probabilities", str(md["outputs"]))
        md1 = hc.get_model_metadata(model, "1")
        expect(md1["name"] == model, str(md1))
        return f"platform {md['platform']}, versions {md['versions']}"

    @check("v2-http model config (Triton's model configuration extension)")
    def _() -> str:
        cfg = hc.get_model_config(model)
        expect(cfg.get("name") == model, str(cfg))
        inp = cfg["input"][0]
        expect(inp["format"] == "FORMAT_NHWC" and inp["dims"] == [224, 224, 3]
               and cfg["max_batch_size"] > 0, str(cfg))
        return str(cfg)[:200]

    def http_fp32(binary_in: bool, binary_out: bool, class_count: int = 0) -> Any:
        inp = thttp.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=binary_in)
        out = thttp.InferRequestedOutput("probabilities", binary_data=binary_out,
                                         class_count=class_count)
        return hc.infer(model, [inp], outputs=[out], request_id="req-1")

    @check("v2-http infer FP32 JSON in / JSON out")
    def _() -> None:
        res = http_fp32(False, False)
        p = res.as_numpy("probabilities")
        expect(p.shape == (len(batch), 5), f"shape {p.shape}")
        if "float_probs" in state:
            expect(np.allclose(p, state["float_probs"], atol=1e-4), "V2 and TFS differ")
        expect(res.get_response().get("id") == "req-1", str(res.get_response())[:200])

    @check("v2-http infer FP32 binary data extension in and out")
    def _() -> None:
        res = http_fp32(True, True)
        p = res.as_numpy("probabilities")
        expect(p.shape == (len(batch), 5) and p.dtype == np.float32, f"{p.shape} {p.dtype}")

    @check("v2-http infer classification extension (class_count=2)")
    def _() -> str:
        res = http_fp32(True, True, class_count=2)
        c = res.as_numpy("probabilities")
        expect(c.shape == (len(batch), 2), f"shape {c.shape}")
        first = c[0][0].decode() if isinstance(c[0][0], bytes) else str(c[0][0])
        expect(first.split(":")[2] in CLASSES, first)
        return first

    @check("v2-http infer BYTES encoded JPEGs (binary)")
    def _() -> str:
        arr = np.array(jpegs, dtype=np.object_)
        inp = thttp.InferInput("images", [len(jpegs)], "BYTES")
        inp.set_data_from_numpy(arr, binary_data=True)
        res = hc.infer(model, [inp])
        p = res.as_numpy("probabilities")
        expect(p.shape == (len(jpegs), 5), f"shape {p.shape}")
        acc = float((p.argmax(axis=1) == np.array(truth)).mean())
        expect(acc >= 0.7, f"accuracy {acc}")
        return f"top-1 accuracy {acc:.0%}"

    @check("v2-http infer gzip request and response compression")
    def _() -> None:
        inp = thttp.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=True)
        res = hc.infer(model, [inp], request_compression_algorithm="gzip",
                       response_compression_algorithm="gzip")
        expect(res.as_numpy("probabilities").shape == (len(batch), 5), "shape")

    @check("v2-http async_infer")
    def _() -> None:
        inp = thttp.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=True)
        c = thttp.InferenceServerClient(url=f"{args.host}:{args.rest_port}", concurrency=2)
        p = c.async_infer(model, [inp]).get_result().as_numpy("probabilities")
        expect(p.shape == (len(batch), 5), f"shape {p.shape}")

    @check("v2-http repository index / statistics (Triton extensions)", extension=True)
    def _() -> str:
        return f"{hc.get_model_repository_index()} {hc.get_inference_statistics(model)}"[:200]

    @check("v2-http infer unknown model -> error")
    def _() -> str:
        inp = thttp.InferInput("images", list(batch[:1].shape), "FP32")
        inp.set_data_from_numpy(batch[:1])
        try:
            hc.infer("no_such_model", [inp])
        except InferenceServerException as exc:
            expect(exc.status() in ("400", "404"), f"status {exc.status()}: {exc.message()}")
            return f"{exc.status()}: {exc.message()}"
        raise AssertionError("accepted")

    @check("v2-http infer bad shape -> 400")
    def _() -> str:
        x = np.zeros((1, 10, 10, 3), np.float32)
        inp = thttp.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        try:
            hc.infer(model, [inp])
        except InferenceServerException as exc:
            expect(exc.status() == "400", f"status {exc.status()}: {exc.message()}")
            return exc.message()
        raise AssertionError("accepted")

    # ---- KServe V2: tritonclient.grpc --------------------------------------------------

    gc = tgrpc.InferenceServerClient(url=f"{args.host}:{args.grpc_port}")

    @check("v2-grpc server live / ready / model ready")
    def _() -> None:
        expect(gc.is_server_live(), "not live")
        expect(gc.is_server_ready(), "not ready")
        expect(gc.is_model_ready(model), "model not ready")
        expect(gc.is_model_ready(model, "1"), "model version 1 not ready")

    @check("v2-grpc server and model metadata")
    def _() -> str:
        smd = gc.get_server_metadata(as_json=True)
        md = gc.get_model_metadata(model, as_json=True)
        inp = {t["name"]: t for t in md["inputs"]}["images"]
        expect(inp["datatype"] == "FP32" and [int(d) for d in inp["shape"]] == [-1, 224, 224, 3],
               str(inp))
        return f"server {smd.get('name')} {smd.get('version')}, platform {md.get('platform')}"

    @check("v2-grpc model config (Triton's model configuration extension)")
    def _() -> str:
        from tritonclient.grpc import model_config_pb2 as mc

        cfg = gc.get_model_config(model).config
        expect(cfg.name == model, str(cfg))
        expect(cfg.input[0].format == mc.ModelInput.FORMAT_NHWC
               and list(cfg.input[0].dims) == [224, 224, 3]
               and cfg.input[0].data_type == mc.TYPE_FP32 and cfg.max_batch_size > 0, str(cfg))
        return f"platform {cfg.platform}, max_batch_size {cfg.max_batch_size}"

    @check("v2-grpc ModelStreamInfer (Triton extension)", extension=True)
    def _() -> str:
        import queue

        q: queue.Queue[tuple[Any, Any]] = queue.Queue()
        c = tgrpc.InferenceServerClient(url=f"{args.host}:{args.grpc_port}")
        c.start_stream(callback=lambda result, error: q.put((result, error)))
        try:
            inp = tgrpc.InferInput("images", list(batch[:1].shape), "FP32")
            inp.set_data_from_numpy(batch[:1])
            c.async_stream_infer(model, [inp])
            result, error = q.get(timeout=30)
        finally:
            c.stop_stream()
        if error is not None:
            raise error
        return str(result.as_numpy("probabilities").shape)

    @check("v2-grpc async_infer")
    def _() -> None:
        import queue

        q: queue.Queue[tuple[Any, Any]] = queue.Queue()
        inp = tgrpc.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        gc.async_infer(model, [inp], callback=lambda result, error: q.put((result, error)))
        result, error = q.get(timeout=60)
        if error is not None:
            raise error
        expect(result.as_numpy("probabilities").shape == (len(batch), 5), "shape")

    @check("v2-grpc infer FP32")
    def _() -> None:
        inp = tgrpc.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        res = gc.infer(model, [inp], outputs=[tgrpc.InferRequestedOutput("probabilities")],
                       request_id="g-1")
        p = res.as_numpy("probabilities")
        expect(p.shape == (len(batch), 5), f"shape {p.shape}")
        if "float_probs" in state:
            expect(np.allclose(p, state["float_probs"], atol=1e-4), "V2 and TFS differ")
        expect(res.get_response().id == "g-1", "id not echoed")

    @check("v2-grpc infer classification extension (class_count=3)")
    def _() -> str:
        inp = tgrpc.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        res = gc.infer(model, [inp], outputs=[
            tgrpc.InferRequestedOutput("probabilities", class_count=3)])
        c = res.as_numpy("probabilities")
        expect(c.shape == (len(batch), 3), f"shape {c.shape}")
        return c[0][0].decode()

    @check("v2-grpc infer BYTES encoded JPEGs")
    def _() -> str:
        arr = np.array(jpegs, dtype=np.object_)
        inp = tgrpc.InferInput("images", [len(jpegs)], "BYTES")
        inp.set_data_from_numpy(arr)
        p = gc.infer(model, [inp], model_version="1").as_numpy("probabilities")
        expect(p.shape == (len(jpegs), 5), f"shape {p.shape}")
        acc = float((p.argmax(axis=1) == np.array(truth)).mean())
        expect(acc >= 0.7, f"accuracy {acc}")
        return f"top-1 accuracy {acc:.0%}"

    @check("v2-grpc infer unknown model -> error")
    def _() -> str:
        inp = tgrpc.InferInput("images", list(batch[:1].shape), "FP32")
        inp.set_data_from_numpy(batch[:1])
        try:
            gc.infer("no_such_model", [inp])
        except InferenceServerException as exc:
            expect("NOT_FOUND" in str(exc.status()), f"{exc.status()}: {exc.message()}")
            return f"{exc.status()}"
        raise AssertionError("accepted")

    for run in CHECKS:
        run()
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
