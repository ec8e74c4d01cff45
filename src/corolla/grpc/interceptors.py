"""gRPC server interceptor: API keys, the concurrency limit, request metrics, in-flight count.

The gRPC counterpart of the REST middlewares (corolla.http.observe, .limits, .auth), as one
``grpc.aio.ServerInterceptor`` handed to ``build_grpc_server(interceptors=...)``. Wrapped
handlers are built once per method and cached; per call the wrapper reads the metadata, takes
the model name from the request message (``model_spec.name`` for TF Serving's APIs, ``name`` or
``model_name`` for KServe V2's) and:

- auth: no key or an unknown key: UNAUTHENTICATED; a key that may not call the model:
  PERMISSION_DENIED; ``HandleReloadConfigRequest`` needs a key for every model. The health
  service is open when configured so (as the REST health paths).
- limit: beyond ``max_concurrent_requests`` (REST and gRPC together): RESOURCE_EXHAUSTED.
- metrics: TF Serving's request_count/request_latency with ``entrypoint="GRPC"`` for Predict,
  Classify, Regress, MultiInference and ModelInfer.

Streaming methods (health Watch, reflection) get the key check only.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import grpc
from google.protobuf.message import Message

from corolla.auth import KeyStore, bearer_token
from corolla.errors import CorollaError, PermissionDenied
from corolla.logging_setup import REQUEST_ID, RequestIds
from corolla.metrics import UNKNOWN_MODEL, Metrics

access = logging.getLogger("corolla.access")

# A method's behaviour: (request or request iterator, context) -> a response or an async
# iterator of responses; a unary one: (request, context) -> awaitable response.
Behavior = Callable[..., object]
UnaryBehavior = Callable[[Message, grpc.aio.ServicerContext], Awaitable[object]]

HEALTH_PREFIX = "/grpc.health.v1.Health/"
RELOAD_METHOD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"

# method -> metrics API label
INFERENCE_METHODS = {
    "/tensorflow.serving.PredictionService/Predict": "Predict",
    "/tensorflow.serving.PredictionService/Classify": "Classify",
    "/tensorflow.serving.PredictionService/Regress": "Regress",
    "/tensorflow.serving.PredictionService/MultiInference": "MultiInference",
    "/inference.GRPCInferenceService/ModelInfer": "ModelInfer",
}
OPEN_HEALTH_METHODS = (
    HEALTH_PREFIX,
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
    "/inference.GRPCInferenceService/ModelReady",
)


def request_models(request: object) -> list[str]:
    """Model names a request message refers to (none for server-level calls)."""
    spec: object = getattr(request, "model_spec", None)
    name: object = getattr(spec, "name", None) if spec is not None else None
    if isinstance(name, str) and name:
        return [name]
    tasks = getattr(request, "tasks", None)  # MultiInference
    if tasks:
        return sorted({t.model_spec.name for t in tasks})
    for field in ("model_name", "name"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return [value]
    return []


def _metadata(context: grpc.aio.ServicerContext) -> tuple[str | None, str | None, str | None]:
    """(authorization, x-api-key, x-request-id) from the call's metadata."""
    authorization = api_key = request_id = None
    for item in context.invocation_metadata() or ():
        key, value = item[0], item[1]
        if key == "authorization":
            authorization = value if isinstance(value, str) else value.decode("latin-1")
        elif key == "x-api-key":
            api_key = value if isinstance(value, str) else value.decode("latin-1")
        elif key == "x-request-id":
            request_id = value if isinstance(value, str) else value.decode("latin-1")
    return authorization, api_key, request_id


class OpsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        *,
        metrics: Metrics | None = None,
        keys: KeyStore | None = None,
        known_model: Callable[[str], bool] = lambda name: True,
        max_concurrent_requests: int = 0,
        health_open: bool = True,
        access_log: bool = False,
    ) -> None:
        self.metrics = metrics
        self.keys = keys
        self.known_model = known_model
        self.max_concurrent = max_concurrent_requests
        self.health_open = health_open
        self.access_log = access_log
        self.ids = RequestIds()
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None:
            return None
        wrapped = self._wrap(method, handler)
        self._cache[method] = wrapped
        return wrapped

    def _needs_key(self, method: str) -> bool:
        return self.keys is not None and not (
            self.health_open and method.startswith(OPEN_HEALTH_METHODS)
        )

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        needs_key = self._needs_key(method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, needs_key),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if not needs_key:
            return handler
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._guarded(method, handler.unary_stream, unary_request=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._guarded(method, handler.stream_unary, unary_request=False),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._guarded(method, handler.stream_stream, unary_request=False),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _guarded(self, method: str, inner: Behavior, *, unary_request: bool) -> Behavior:
        """A streaming behavior of the same kind as ``inner`` that checks the key first."""
        if inspect.isasyncgenfunction(inner):

            async def gen(request: object, context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[object]:
                await self._check_key(
                    context, method, request_models(request) if unary_request else []
                )
                async for item in inner(request, context):
                    yield item

            return gen

        async def coro(request: object, context: grpc.aio.ServicerContext) -> object:
            await self._check_key(context, method, request_models(request) if unary_request else [])
            return await cast(Awaitable[object], inner(request, context))

        return coro

    async def _check_key(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        models: list[str],
        authorization: str | None = None,
        api_key: str | None = None,
        *,
        read_metadata: bool = True,
    ) -> None:
        assert self.keys is not None
        if read_metadata:
            authorization, api_key, _ = _metadata(context)
        try:
            key = self.keys.authenticate(bearer_token(authorization, api_key))
            if method == RELOAD_METHOD and not key.admin:
                raise PermissionDenied("Reloading the configuration needs an admin key "
                                       "(scope @admin in the API keys file)")
            for model in models:
                if not key.allows(model):
                    raise PermissionDenied(f"This API key may not call model {model}")
        except CorollaError as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)

    def _unary(self, method: str, behavior: UnaryBehavior, needs_key: bool
               ) -> UnaryBehavior:
        api = INFERENCE_METHODS.get(method)
        metrics = self.metrics if api is not None else None
        inflight = self.metrics.inflight if self.metrics is not None else None
        max_concurrent = self.max_concurrent
        counted = not method.startswith(OPEN_HEALTH_METHODS)

        access_log = self.access_log
        ids = self.ids

        async def unary(request: Message, context: grpc.aio.ServicerContext) -> object:
            start = time.perf_counter()
            authorization, api_key, rid = _metadata(context)
            token = REQUEST_ID.set(ids.accept(rid))
            models = request_models(request) if (needs_key or metrics is not None) else []
            status = "OK"
            if counted and inflight is not None:
                if max_concurrent and inflight.total >= max_concurrent:
                    status = "RESOURCE_EXHAUSTED"
                    self._record(metrics, models, api, status, start)
                    REQUEST_ID.reset(token)
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"Too many concurrent requests (the limit is "
                        f"{max_concurrent}); retry later",
                    )
                inflight.grpc += 1
            try:
                if needs_key:
                    await self._check_key(
                        context, method, models, authorization, api_key, read_metadata=False
                    )
                result = await behavior(request, context)
                code = context.code()
                if code is not None and code != grpc.StatusCode.OK:
                    status = _code_name(code)
                return result
            except BaseException:
                code = context.code()
                status = _code_name(code) if code is not None else "CANCELLED"
                raise
            finally:
                if counted and inflight is not None:
                    inflight.grpc -= 1
                self._record(metrics, models, api, status, start)
                if access_log:
                    elapsed = time.perf_counter() - start
                    access.info(
                        "GRPC %s %s %.2fms",
                        method,
                        status,
                        elapsed * 1e3,
                        extra={
                            "method": "GRPC",
                            "path": method,
                            "code": status,
                            "duration_ms": round(elapsed * 1e3, 3),
                            "client": context.peer(),
                            "model": ",".join(models),
                        },
                    )
                REQUEST_ID.reset(token)

        return unary

    def _record(
        self, metrics: Metrics | None, models: list[str], api: str | None, status: str, start: float
    ) -> None:
        if metrics is None or api is None:
            return
        elapsed = time.perf_counter() - start
        for model in models or [UNKNOWN_MODEL]:
            name = model if self.known_model(model) else UNKNOWN_MODEL
            metrics.observe_request(name, api, "GRPC", status, elapsed)


def _code_name(code: grpc.StatusCode) -> str:
    name = getattr(code, "name", None)
    return name if isinstance(name, str) else str(code)
