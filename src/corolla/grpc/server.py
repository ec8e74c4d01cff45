"""One ``grpc.aio`` server carrying every gRPC API Corolla speaks.

:func:`build_grpc_server` registers TF Serving's PredictionService and ModelService, KServe V2's
GRPCInferenceService, grpc.health.v1 and server reflection; the caller adds ports and starts it::

    server = build_grpc_server(service, max_message_bytes=64 << 20)
    port = server.add_insecure_port("[::]:8500")
    # or server.add_secure_port(address, credentials) for TLS (corolla.tls builds them)
    await server.start()

Reflection serves Corolla's descriptors from a pool built here, since the generated modules
live in :data:`corolla.protos.pool.POOL`, not in protobuf's default pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from corolla.config import ReloadConfig
from corolla.grpc.errors import tolerant
from corolla.grpc.health import Health
from corolla.grpc.kserve_v2 import KServeV2
from corolla.grpc.tfserving import TfServingModel, TfServingPrediction
from corolla.protos.gen import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from corolla.protos.gen.tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)
from corolla.service import PredictionService

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
V2_SERVICE = "inference.GRPCInferenceService"
API_SERVICES = (PREDICTION_SERVICE, MODEL_SERVICE, V2_SERVICE)


def _add_file(pool: Any, fd: Any, seen: set[str]) -> None:
    if fd.name in seen:
        return
    seen.add(fd.name)
    for dep in fd.dependencies:
        _add_file(pool, dep, seen)
    pool.AddSerializedFile(fd.serialized_pb)


def reflection_pool() -> Any:
    """A descriptor pool with every service this server offers, and their dependencies."""
    pool = descriptor_pool.DescriptorPool()
    seen: set[str] = set()
    for module in (prediction_service_pb2, model_service_pb2, grpc_predict_v2_pb2,
                   health_pb2, reflection_pb2):
        _add_file(pool, module.DESCRIPTOR, seen)
    return pool


class _TolerantRegistration:
    """Stands for the server in a generated ``add_*Servicer_to_server``: registers the same
    handlers with request deserializers that hand undecodable bytes to the servicer as
    :class:`~corolla.grpc.errors.Malformed` (answered INVALID_ARGUMENT) instead of raising."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: the generated code registers the same handlers by name right after."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        safe = {name: h._replace(request_deserializer=tolerant(h.request_deserializer))
                for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, safe),))
        self._server.add_registered_method_handlers(service, safe)


def build_grpc_server(service: PredictionService, *, max_message_bytes: int,
                      reload_config: ReloadConfig | None = None,
                      reflection_enabled: bool = True,
                      interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                      options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Server:
    """A server with every servicer registered; no port yet, not started.

    ``reload_config``: what ModelService's ReloadConfig does (the server's, which reaches
    every process; default: this process's prediction service)."""
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes),
                 *options])
    apis: Any = _TolerantRegistration(server)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        TfServingPrediction(service), apis)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        TfServingModel(service, reload_config=reload_config), apis)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(KServeV2(service), apis)
    health_pb2_grpc.add_HealthServicer_to_server(Health(service, API_SERVICES), server)
    if reflection_enabled:
        names = (*API_SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server, pool=reflection_pool())
    return server
