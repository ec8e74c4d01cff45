"""KServe V2 / Open Inference Protocol REST API as Starlette routes.

``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/{m}[/versions/{v}]`` (model metadata), ``.../ready``, ``.../config`` (Triton's model
configuration extension), ``POST /v2/repository/index`` (the index of Triton's model repository
extension: every model version and its state; only the models an API key may call) and
``POST .../infer`` with JSON
or the binary tensor data extension (``Inference-Header-Content-Length``). Readiness answers 200
when ready and 400 when not, as the protocol says (a 4xx means false). BYTES inputs of an image
model's input are encoded images, decoded server-side. Request bodies may be gzip- or
deflate-compressed (``Content-Encoding``), as tritonclient can send them. Errors are raised as
CorollaError and answered ``{"error": ...}`` by the app's one handler.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from corolla import admission, frontend
from corolla.errors import InvalidArgument
from corolla.http.encoding import BodyParser, request_body
from corolla.http.routes import Handler, Route
from corolla.protocols import kserve_v2 as codec
from corolla.service import PredictionService


def _json(doc: object, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def _header_length(request: Request) -> int | None:
    raw = request.headers.get(codec.HEADER_LENGTH)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidArgument(f"{codec.HEADER_LENGTH} must be an integer, got {raw!r}") from exc


class KServeV2Rest:
    def __init__(self, service: PredictionService, *, server_name: str = "corolla",
                 bodies: BodyParser | None = None) -> None:
        """``bodies``: the server's body parser (big bodies one at a time per process)."""
        self.service = service
        self.server_name = server_name
        self.bodies = bodies or BodyParser()

    def routes(self) -> list[Route]:
        """The V2 routes for the route table (inference first: the table tries them in order)."""
        get, post = frozenset({"GET"}), frozenset({"POST"})
        model_apis: list[tuple[str, str, frozenset[str], Handler]] = [
            ("ModelInfer", "/infer", post, self.infer),
            ("ModelMetadata", "", get, self.model_metadata),
            ("ModelReady", "/ready", get, self.model_ready),
            ("ModelConfig", "/config", get, self.model_config),
        ]
        return [
            *(Route(api=api, path=path + suffix, methods=methods, handler=handler)
              for api, suffix, methods, handler in model_apis
              for path in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")),
            Route(api="ServerMetadata", path="/v2", methods=get, handler=self.server_metadata),
            Route(api="ServerLive", path="/v2/health/live", methods=get, handler=self.live),
            Route(api="ServerReady", path="/v2/health/ready", methods=get, handler=self.ready),
            Route(api="RepositoryIndex", path="/v2/repository/index", methods=post,
                  handler=self.repository_index),
        ]

    async def server_metadata(self, request: Request) -> Response:
        return _json(codec.server_metadata(self.server_name))

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.service.ready()
        return _json({"ready": ready}, 200 if ready else 400)

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        ready = frontend.model_ready(self.service, name, request.path_params.get("version"))
        return _json({"name": name, "ready": ready}, 200 if ready else 400)

    async def model_metadata(self, request: Request) -> Response:
        m = frontend.v2_model(self.service, request.path_params["name"],
                              request.path_params.get("version"))
        return _json(codec.model_metadata(m.name, m.versions, m.platform, m.signature))

    async def model_config(self, request: Request) -> Response:
        return _json(frontend.v2_model_config(self.service, request.path_params["name"],
                                              request.path_params.get("version")))

    async def repository_index(self, request: Request) -> Response:
        body = await request_body(request)
        ready = False
        if body.strip():
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidArgument(f"the repository index request is not JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise InvalidArgument("the repository index request must be a JSON object")
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidArgument(f"'ready' must be true or false, got {ready!r}")
        key = request.scope.get("corolla.api_key")  # set by AuthMiddleware when keys are on
        allows = key.allows if key is not None else (lambda name: True)
        return _json(frontend.repository_index(self.service, ready_only=ready, allows=allows))

    async def infer(self, request: Request) -> Response:
        body = await request_body(request)
        header_length = _header_length(request)
        json_bytes = len(body) if header_length is None else min(max(0, header_length), len(body))
        # The JSON part's Python objects take many times its size while it is parsed; binary
        # tensors are views of the body.
        await admission.parsing(json_bytes)
        req = await self.bodies.parse(len(body), codec.decode_request, body, header_length)
        admission.parsed(keep=admission.owned_bytes(req.inputs.values()))
        result = await frontend.v2_infer(self.service, request.path_params["name"],
                                         request.path_params.get("version"), req)
        content, header_length = codec.encode_response(
            model_name=result.model_name, model_version=result.model_version,
            request_id=req.id, outputs={k: result.outputs[k] for k in result.order},
            request=req)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={codec.HEADER_LENGTH: str(header_length)})
