"""The REST API as an OpenAPI 3.1 document, made from the one route table.

Every path comes from a :class:`~corolla.http.routes.Route` of the server's table; what each
API's operation takes and answers comes from :data:`OPERATIONS` (keyed by the route's API name)
or :data:`PLAIN_PATHS` (routes with no API: health, metrics, the web page). A route that neither
documents is an error when the document is built, so a new route cannot go undocumented (tests
build the document from a server with every option on). KServe V2's schemas keep the names of
the Open Inference Protocol's published OpenAPI document (``inference_request``,
``request_input``, ``tensor_data``...), with Corolla's extensions (binary tensor data, Triton's
classification and model configuration) added.

Served at ``GET /openapi.json`` (:class:`OpenApi`); a copy for the default settings is
``docs/openapi.json`` (tests/http/test_openapi.py checks it, and rewrites it with
``COROLLA_WRITE_OPENAPI=1``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from corolla import __version__
from corolla.http import webui
from corolla.http.routes import Route, RouteTable

PATH = "/openapi.json"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


ERROR = _json(_ref("error"), "The request failed; the message says why")
_ERROR_REF = {"$ref": "#/components/responses/error"}
# The answers any route may give besides its own (the one error body, TF Serving's codes):
# 400 bad request, 401/403 API keys, 404 unknown model or version, 405 method, 413 body too
# large (or more than the memory budget), 429 too many requests or a full queue, 431 headers too
# large, 503 draining or memory busy (with Retry-After), 504 deadline.
ERRORS = {code: _ERROR_REF for code in ("400", "401", "403", "404", "405", "413", "429", "431",
                                   "503", "504")}

SCHEMAS: dict[str, Any] = {
    "error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    # ---- TF Serving ----
    "tf_predict_request": {
        "type": "object",
        "description": "TF Serving's row (instances) or columnar (inputs) format; binary values "
                       "as {\"b64\": ...}. Corolla: top_k asks for labels with scores.",
        "properties": {"signature_name": {"type": "string"}, "instances": {"type": "array"},
                       "inputs": {}, "top_k": {"type": "integer", "minimum": 1}},
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}]},
    "tf_predict_response": {
        "type": "object",
        "properties": {"predictions": {}, "outputs": {}, "model_version": {"type": "string"}},
        "anyOf": [{"required": ["predictions"]}, {"required": ["outputs"]}]},
    "tf_examples_request": {
        "type": "object", "required": ["examples"],
        "properties": {"signature_name": {"type": "string"},
                       "examples": {"type": "array", "items": {"type": "object"}},
                       "context": {"type": "object"}, "top_k": {"type": "integer"}}},
    "tf_classify_response": {
        "type": "object", "required": ["result"],
        "properties": {"result": {"type": "array", "items": {"type": "array", "items": {
            "type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]}}}}},
    "tf_regress_response": {
        "type": "object", "required": ["result"],
        "properties": {"result": {"type": "array", "items": {"type": "number"}}}},
    "tf_model_status": {
        "type": "object", "required": ["model_version_status"],
        "properties": {"model_version_status": {"type": "array", "items": {
            "type": "object", "required": ["version", "state", "status"],
            "properties": {"version": {"type": "string"}, "state": {"type": "string"},
                           "status": {"type": "object", "properties": {
                               "error_code": {"type": "string"},
                               "error_message": {"type": "string"}}}}}}}},
    "tf_model_metadata": {
        "type": "object", "required": ["model_spec", "metadata"],
        "properties": {"model_spec": {"type": "object"}, "metadata": {"type": "object"}}},
    "image_upload": {"type": "string", "contentMediaType": "image/*",
                     "description": "Encoded image bytes (JPEG, PNG, WebP, GIF, BMP, TIFF)"},
    "image_form": {"type": "object", "description": "One or more image files, and top_k",
                   "properties": {"file": {"type": "string", "contentMediaType": "image/*"},
                                  "top_k": {"type": "string"}}},
    # ---- KServe V2 (Open Inference Protocol) ----
    "parameters": {"type": "object"},
    "metadata_server_response": {
        "type": "object", "required": ["name", "version", "extensions"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                       "extensions": {"type": "array", "items": {"type": "string"}}}},
    "metadata_tensor": {
        "type": "object", "required": ["name", "datatype", "shape"],
        "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                       "shape": {"type": "array", "items": {"type": "integer"}}}},
    "metadata_model_response": {
        "type": "object", "required": ["name", "platform"],
        "properties": {"name": {"type": "string"},
                       "versions": {"type": "array", "items": {"type": "string"}},
                       "platform": {"type": "string"},
                       "inputs": {"type": "array", "items": _ref("metadata_tensor")},
                       "outputs": {"type": "array", "items": _ref("metadata_tensor")}}},
    "model_ready_response": {
        "type": "object", "required": ["ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    "model_config_response": {
        "type": "object", "description": "Triton's model configuration extension",
        "required": ["name", "platform", "max_batch_size", "input", "output"],
        "properties": {"name": {"type": "string"}, "platform": {"type": "string"},
                       "backend": {"type": "string"},
                       "max_batch_size": {"type": "integer"},
                       "input": {"type": "array", "items": {"type": "object"}},
                       "output": {"type": "array", "items": {"type": "object"}}}},
    "tensor_data": {"type": "array", "items": {"anyOf": [
        _ref("tensor_data"), {"type": "number"}, {"type": "string"}, {"type": "boolean"},
        {"type": "object", "required": ["b64"], "properties": {"b64": {"type": "string"}}}]}},
    "request_input": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "description": "data, or (binary tensor data) parameters.binary_data_size",
        "properties": {"name": {"type": "string"},
                       "shape": {"type": "array", "items": {"type": "integer"}},
                       "datatype": {"type": "string"}, "parameters": _ref("parameters"),
                       "data": {"anyOf": [_ref("tensor_data"), {"type": "number"},
                                          {"type": "string"}, {"type": "boolean"}]}}},
    "request_output": {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": _ref("parameters")}},
    "inference_request": {
        "type": "object", "required": ["inputs"],
        "properties": {"id": {"type": "string"}, "parameters": _ref("parameters"),
                       "inputs": {"type": "array", "items": _ref("request_input")},
                       "outputs": {"type": "array", "items": _ref("request_output")}}},
    "response_output": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {"name": {"type": "string"},
                       "shape": {"type": "array", "items": {"type": "integer"}},
                       "datatype": {"type": "string"}, "parameters": _ref("parameters"),
                       "data": _ref("tensor_data")}},
    "inference_response": {
        "type": "object", "required": ["model_name", "outputs"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                       "id": {"type": "string"}, "parameters": _ref("parameters"),
                       "outputs": {"type": "array", "items": _ref("response_output")}}},
    "repository_index_request": {"type": "object",
                                 "properties": {"ready": {"type": "boolean"}}},
    "repository_index_response": {"type": "array", "items": {
        "type": "object", "required": ["name", "state"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                       "state": {"type": "string"}, "reason": {"type": "string"}}}},
    # ---- health ----
    "live": {"type": "object", "required": ["live"],
             "properties": {"live": {"type": "boolean"}}},
    "ready": {"type": "object", "required": ["ready"],
              "properties": {"ready": {"type": "boolean"}, "model": {"type": "string"},
                             "draining": {"type": "boolean"},
                             "not_ready": {"type": "array", "items": {"type": "string"}},
                             "reason": {"type": "string"}}},
}

_PREDICT_BODY = {"required": True, "content": {
    JSON: {"schema": _ref("tf_predict_request")},
    "image/*": {"schema": _ref("image_upload")},
    "multipart/form-data": {"schema": _ref("image_form")}}}
_EXAMPLES_BODY = {"required": True, "content": {JSON: {"schema": _ref("tf_examples_request")}}}
_V2_INFER_BODY = {"required": True, "content": {
    JSON: {"schema": _ref("inference_request")},
    "application/octet-stream": {"schema": {
        "type": "string", "description": "Binary tensor data extension: the JSON request "
        "(Inference-Header-Content-Length bytes), then each input's raw data"}}}}
_TOP_K = {"name": "top_k", "in": "query", "required": False, "schema": {"type": "integer"},
          "description": "labels with scores for the best k classes (Corolla)"}
_HEADER_LENGTH = {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                  "schema": {"type": "integer"}}


def _op(summary: str, ok: dict[str, Any], body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, codes: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    """An operation: ``ok`` for 200, the error body for the other codes but ``codes``."""
    op: dict[str, Any] = {"summary": summary,
                          "responses": {"200": ok, **ERRORS, **(codes or {})}}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


# Each API's operations, by HTTP method; paths come from the route table.
OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "Predict": {"post": _op("TF Serving predict, or encoded images (Corolla)",
                            _json(_ref("tf_predict_response")), _PREDICT_BODY, [_TOP_K])},
    "Classify": {"post": _op("TF Serving classify", _json(_ref("tf_classify_response")),
                             _EXAMPLES_BODY, [_TOP_K])},
    "Regress": {"post": _op("TF Serving regress", _json(_ref("tf_regress_response")),
                            _EXAMPLES_BODY)},
    "GetModelStatus": {"get": _op("TF Serving model status", _json(_ref("tf_model_status")))},
    "GetModelMetadata": {"get": _op("TF Serving model metadata",
                                    _json(_ref("tf_model_metadata")))},
    "ServerMetadata": {"get": _op("V2 server metadata", _json(_ref("metadata_server_response")))},
    "ServerLive": {"get": _op("V2 server live", _json(_ref("live")))},
    "ServerReady": {"get": _op("V2 server ready (400 or 503: not ready)", _json(_ref("ready")),
                               codes={"400": _json(_ref("ready"), "Not ready"),
                                      "503": _json(_ref("ready"), "Not ready")})},
    "ModelMetadata": {"get": _op("V2 model metadata", _json(_ref("metadata_model_response")))},
    "ModelReady": {"get": _op("V2 model ready (400: not ready)",
                              _json(_ref("model_ready_response")),
                              codes={"400": _json(_ref("model_ready_response"), "Not ready")})},
    "ModelConfig": {"get": _op("V2 model configuration (Triton's extension)",
                               _json(_ref("model_config_response")))},
    "ModelInfer": {"post": _op(
        "V2 inference", {"description": "OK: JSON, or with binary outputs the JSON header "
                         "(Inference-Header-Content-Length bytes) then the raw data",
                         "content": {JSON: {"schema": _ref("inference_response")},
                                     "application/octet-stream": {"schema": {
                                         "type": "string"}}}},
        _V2_INFER_BODY, [_HEADER_LENGTH])},
    "RepositoryIndex": {"post": _op(
        "V2 model repository index (Triton's extension)", _json(_ref("repository_index_response")),
        {"required": False, "content": {JSON: {"schema": _ref("repository_index_request")}}})},
}

# Routes without an API, by path.
PLAIN_PATHS: dict[str, dict[str, dict[str, Any]]] = {
    "/healthz": {"get": _op("Liveness", _json(_ref("live")))},
    "/readyz": {"get": _op("Readiness: every model (or ?model=NAME) AVAILABLE and not draining "
                           "(503 otherwise)", _json(_ref("ready")),
                           params=[{"name": "model", "in": "query", "required": False,
                                    "schema": {"type": "string"}}],
                           codes={"503": _json(_ref("ready"), "Not ready")})},
    PATH: {"get": _op("This document", _json({"type": "object"}))},
}
_METRICS = {"get": _op("Prometheus metrics", {
    "description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}})}
_PAGE = {"get": _op("The web page (and its assets)", {
    "description": "OK", "content": {"*/*": {"schema": {"type": "string"}}}})}


def _plain(route: Route, metrics_paths: Collection[str]) -> dict[str, dict[str, Any]] | None:
    if route.path in PLAIN_PATHS:
        return PLAIN_PATHS[route.path]
    if route.path in metrics_paths:
        return _METRICS
    if route.path == webui.PAGE_PATH or route.path.startswith(webui.ASSET_PREFIX):
        return _PAGE
    return None


def _parameters(path: str) -> list[dict[str, Any]]:
    doc = {"name": "the model", "version": "a version number", "label": "a version label"}
    return [{"name": p, "in": "path", "required": True, "schema": {"type": "string"},
             "description": doc[p]} for p in ("name", "version", "label") if f"{{{p}}}" in path]


def document(table: RouteTable, metrics_paths: Collection[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in ``table`` (ValueError for a route that
    neither OPERATIONS nor PLAIN_PATHS documents; ``metrics_paths``: the metrics routes)."""
    paths: dict[str, Any] = {}
    for route in table.routes:
        if route.prefix:
            continue  # TF Serving's catch-all: every other /v1/models/ path is a 404
        ops = (OPERATIONS.get(route.api) if route.api is not None
               else _plain(route, metrics_paths))
        if ops is None:
            raise ValueError(f"route {route.path} (API {route.api}) is not documented in "
                             "corolla.http.openapi")
        item = paths.setdefault(route.path, {})
        for method, op in ops.items():
            if method.upper() not in route.methods:
                raise ValueError(f"{method.upper()} {route.path} is documented but the route "
                                 f"takes {sorted(route.methods)}")
            item[method] = {**op, "operationId": f"{method}:{route.path}"}
        params = _parameters(route.path)
        if params:
            item["parameters"] = params
    return {
        "openapi": "3.1.0",
        "info": {"title": "Corolla REST API", "version": __version__,
                 "description": "TensorFlow Serving's REST API and KServe V2 (Open Inference "
                                "Protocol), with Corolla's extensions. Errors are "
                                "{\"error\": message} with TF Serving's status codes."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "responses": {"error": ERROR}},
    }


class OpenApi:
    """``GET /openapi.json``: the document of the server's route table, made on first use
    (:attr:`table` is set once the table exists: this route is in it)."""

    def __init__(self, metrics_paths: Collection[str] = ()) -> None:
        self.table: RouteTable | None = None
        self.metrics_paths = tuple(metrics_paths)
        self._body: bytes | None = None

    def route(self) -> Route:
        return Route(api=None, path=PATH, methods=frozenset({"GET"}), handler=self.serve)

    async def serve(self, request: Request) -> Response:
        if self._body is None:
            assert self.table is not None, "OpenApi.table is set when the table is built"
            self._body = orjson.dumps(document(self.table, self.metrics_paths),
                                      option=orjson.OPT_INDENT_2)
        return Response(self._body, media_type=JSON)
