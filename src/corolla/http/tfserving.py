"""TensorFlow Serving's REST API (``/v1/models/...``) as Starlette routes.

A thin translator: parse the URL and body, call :class:`PredictionService`, encode the answer.
Besides TF Serving's JSON, ``:predict`` takes encoded images directly: a raw body with
``Content-Type: image/*`` or ``multipart/form-data`` with one or more image files; those answers
carry labels with scores (``?top_k=N``). JSON requests get labels only when they ask with
``"top_k"``, so TF Serving clients see exactly TF Serving's response shapes. JSON and raw image
bodies sent with ``Content-Encoding: gzip`` (or ``deflate``) are inflated first, as TF Serving's
HTTP server inflates gzip bodies.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from corolla import admission, frontend
from corolla.errors import InvalidArgument, NotFound
from corolla.http.encoding import BodyParser, request_body
from corolla.http.routes import Route, route_of
from corolla.images import sniff_format
from corolla.protocols import tf_inference
from corolla.protocols import tfserving_rest as codec
from corolla.service import ModelSpec, PredictionService, find_signature, top_classes
from corolla.versions import tf_serving_version

# The v1 APIs, hot ones first (the table tries a path's routes in order), and their URL verbs.
_APIS = (("Predict", ":predict", "predict"), ("Classify", ":classify", "classify"),
         ("Regress", ":regress", "regress"), ("GetModelStatus", "", "status"),
         ("GetModelMetadata", "/metadata", "metadata"))
_VERB = {api: verb for api, _, verb in _APIS}
_MODEL_PATHS = ("/v1/models/{name}", "/v1/models/{name}/versions/{version}",
                "/v1/models/{name}/labels/{label}")
# TF Serving parses a v1 URL, then answers a method that does not fit its verb (GET :predict,
# POST .../metadata) as a malformed request (404): every v1 route takes all three methods and
# the handler checks. HEAD answers as GET does, without the body (uvicorn drops it).
_METHODS = frozenset({"GET", "HEAD", "POST"})


def json_response(doc: object, status: int = 200) -> Response:
    return Response(codec.dumps(doc), status_code=status, media_type="application/json")


def _malformed(request: Request) -> NotFound:
    return NotFound(f"Malformed request: {request.method} {request.scope['path']}")


def _parse_url(request: Request) -> tuple[ModelSpec, str]:
    """The request's model spec and verb, from its route in the table."""
    match = route_of(request.scope)
    version = match.version
    spec = ModelSpec(name=match.model or "", label=match.label,
                     version=None if version is None else tf_serving_version(version))
    verb = _VERB[match.api or ""]
    if (verb == "status" or verb == "metadata") != (request.method in ("GET", "HEAD")):
        raise _malformed(request)
    return spec, verb


_INTEGER = re.compile(r"[+]?[0-9]{1,18}", re.ASCII)


def parse_top_k(raw: object) -> int:
    """A ``top_k`` from a query string, a form field or a JSON body: a positive integer (a JSON
    number with no fraction, such as ``2.0``, counts; ``true``, ``2.5``, infinities do not)."""
    k: int | None = None
    if isinstance(raw, str):
        if _INTEGER.fullmatch(raw.strip()):
            k = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        k = raw
    elif isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        k = int(raw)
    if k is None or k < 1:
        raise InvalidArgument(f"top_k must be a positive integer, got {raw!r}")
    return k


def _top_k(request: Request, doc: dict[str, Any] | None = None, form: object = None
           ) -> int | None:
    """The request's ``top_k``: a JSON body's or a multipart form field's, else the query's."""
    # Most requests have no query string: skip building QueryParams for them.
    raw: object = (request.query_params.get("top_k") if request.scope.get("query_string")
                   else None)
    if doc is not None and "top_k" in doc:
        raw = doc["top_k"]
    if form is not None:
        raw = form
    if raw is None:
        return None
    return parse_top_k(raw)


class TfServingRest:
    def __init__(self, service: PredictionService, *, bodies: BodyParser | None = None) -> None:
        """``bodies``: the server's body parser (big bodies one at a time per process)."""
        self.service = service
        self.bodies = bodies or BodyParser()

    def routes(self) -> list[Route]:
        """TF Serving's REST API in the route table; any other ``/v1/models/`` path is a
        malformed request (404)."""
        routes = [Route(api=api, path=path + suffix, methods=_METHODS, handler=self.handle)
                  for api, suffix, _ in _APIS for path in _MODEL_PATHS]
        routes.append(Route(api=None, path="/v1/models/", prefix=True, methods=_METHODS,
                            handler=self.malformed))
        return routes

    async def malformed(self, request: Request) -> Response:
        raise _malformed(request)

    async def handle(self, request: Request) -> Response:
        spec, verb = _parse_url(request)
        if verb == "status":
            return json_response(codec.status_response(
                self.service.statuses(spec.name, spec.version, spec.label)))
        if verb == "metadata":
            version, md = self.service.metadata(spec)
            return json_response(codec.metadata_response(spec.name, version, md))
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if verb == "predict" and ctype.startswith("image/"):
            return await self._predict_images(request, spec, [await request_body(request)])
        if verb == "predict" and ctype == "multipart/form-data":
            images, form_top_k = await _multipart_images(request)
            return await self._predict_images(request, spec, images, form_top_k)
        if ctype.startswith(("image/", "multipart/")):
            raise InvalidArgument(f":{verb} takes JSON; image uploads go to :predict")
        if ctype and ctype not in ("application/json", "text/plain",
                                   "application/x-www-form-urlencoded"):
            raise InvalidArgument(
                f"unsupported Content-Type {ctype!r}: send application/json, image/*, "
                "or multipart/form-data")
        body = await request_body(request)
        # The parsed body's Python objects take many times its size until its tensors exist.
        await admission.parsing(len(body))
        try:
            doc = await self.bodies.parse(len(body), codec.loads, body)
        except InvalidArgument:
            image = sniff_format(body[:16])
            if image is None:
                raise
            # An upload without its Content-Type (curl --data-binary without -H, say).
            raise InvalidArgument(
                f"the body is a {image} image but its Content-Type is "
                f"{ctype or 'missing'}: send it with Content-Type image/* (for example "
                'image/jpeg), or as JSON with {"b64": ...} instances') from None
        sig_name = doc.get("signature_name", "")
        if not isinstance(sig_name, str):
            raise InvalidArgument("signature_name must be a string")
        spec = ModelSpec(name=spec.name, version=spec.version, label=spec.label,
                         signature_name=sig_name)
        if verb == "predict":
            inputs, row, top_k = await self._json_inputs(request, spec, doc, len(body))
            # Not kept while the model runs: the parsed body is many times its size.
            del doc, body
            admission.parsed(keep=admission.owned_bytes(inputs.values()))
            return await self._predict_tensors(spec, inputs, row, top_k)
        method = tf_inference.CLASSIFY_METHOD if verb == "classify" else tf_inference.REGRESS_METHOD
        if tf_inference.wants_examples(self.service.metadata(spec)[1], sig_name, method):
            # A SavedModel signature that parses serialized tf.Examples, as TF Serving runs it.
            res = await frontend.run_examples(
                self.service, spec, tf_inference.serialize_json_request(doc), method)
            if res.classifications is not None:
                return json_response(tf_inference.classify_json(res.classifications))
            return json_response(tf_inference.regress_json(res.regressions or []))
        if verb == "classify":
            return await self._classify(request, spec, doc)
        md = self.service.metadata(spec)[1]
        sig = find_signature(md, spec)
        # TF Serving's answer (INVALID_ARGUMENT) for a signature that is not a regression one.
        raise InvalidArgument(
            "Expected regression signature method_name to be tensorflow/serving/regress. "
            f"Was: {sig.method_name}. Model {spec.name} has no regression signature; use "
            f":predict{' or :classify' if md.labels else ''}")

    async def _json_inputs(self, request: Request, spec: ModelSpec, doc: dict[str, Any],
                           size: int = 0) -> tuple[dict[str, np.ndarray], bool, int | None]:
        """A :predict JSON body's tensors, whether it is in the row format, and its top_k."""
        _, md = self.service.metadata(spec)
        sig = find_signature(md, spec)  # before parsing: it decides the single-input shorthand
        inputs, row = await self.bodies.parse(size, codec.parse_predict, doc, sig)
        return inputs, row, _top_k(request, doc)

    async def _predict_tensors(self, spec: ModelSpec, inputs: dict[str, np.ndarray], row: bool,
                               top_k: int | None) -> Response:
        result = await self.service.predict(spec, inputs)
        md = result.metadata
        if top_k is not None and md.labels and md.scores_output:
            classes = top_classes(result.metadata, result.outputs, top_k)
            preds = codec.labelled_predictions(classes, result.outputs, md.scores_output)
            return json_response({"predictions": preds, "model_version": str(result.version)})
        return json_response(codec.predict_response(result.outputs, row))

    async def _predict_images(self, request: Request, spec: ModelSpec, images: list[bytes],
                              form_top_k: str | None = None) -> Response:
        if not images:
            raise InvalidArgument("no image in the request")
        top_k = _top_k(request, form=form_top_k)  # refused before the model runs
        result = await self.service.predict_images(spec, images)
        md = result.metadata
        if md.labels and md.scores_output:
            classes = top_classes(md, result.outputs, top_k or 5)
            preds = codec.labelled_predictions(classes, result.outputs, md.scores_output)
            return json_response({"predictions": preds, "model_version": str(result.version)})
        return json_response(codec.predict_response(result.outputs, True))

    async def _classify(self, request: Request, spec: ModelSpec, doc: dict[str, Any]
                        ) -> Response:
        examples = doc.get("examples")
        if not isinstance(examples, list) or not examples:
            raise InvalidArgument("'examples' must be a non-empty list of objects")
        context = doc.get("context") or {}
        if not isinstance(context, dict):
            raise InvalidArgument("'context' must be an object")
        _, md = self.service.metadata(spec)
        sig = md.signatures.get(spec.signature)
        rows = []
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict):
                raise InvalidArgument(f"example {i} must be an object of features")
            clash = set(ex) & set(context)
            if clash:
                raise InvalidArgument(f"features {sorted(clash)} appear in both context and "
                                      f"example {i}")
            rows.append({**context, **ex})
        if sig is not None and len(sig.inputs) == 1:
            alias = next(iter(sig.inputs))
            # A single-input model: any single feature feeds that input.
            rows = [{alias: next(iter(r.values()))} if len(r) == 1 else r for r in rows]
        inputs, _ = codec.parse_predict({"instances": rows}, sig)
        result = await self.service.classify(spec, inputs, top_k=_top_k(request, doc))
        return json_response({"result": [[[lbl, s] for lbl, s in row] for row in result.classes]})


async def _multipart_images(request: Request) -> tuple[list[bytes], str | None]:
    """The file parts' bytes, in order, and the ``top_k`` text field if there is one (other
    text fields are not read)."""
    form = await request.form(max_files=256, max_fields=256)
    try:
        images = []
        top_k: str | None = None
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                images.append(await value.read())
            elif key == "top_k" and value.strip():  # an HTML form's empty field: unset
                top_k = value
        if not images:
            raise InvalidArgument("multipart/form-data request has no file parts")
        return images, top_k
    finally:
        await form.close()
