"""KServe V2's gRPC API: ``inference.GRPCInferenceService`` over :class:`PredictionService`.

BYTES inputs of a model input that is not a string are encoded images, decoded server-side.
Outputs go back in ``raw_output_contents`` (as Triton sends them; tritonclient reads only those).
"""

from __future__ import annotations

import grpc

from corolla import __version__, frontend
from corolla.grpc.errors import deadline, handle_errors
from corolla.protocols import kserve_v2, kserve_v2_grpc
from corolla.protos.gen import grpc_predict_v2_pb2 as pb
from corolla.protos.gen import grpc_predict_v2_pb2_grpc as pb_grpc
from corolla.service import PredictionService


class KServeV2(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: PredictionService, *, server_name: str = "corolla") -> None:
        self.service = service
        self.server_name = server_name

    @handle_errors
    async def ServerLive(
            self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @handle_errors
    async def ServerReady(
            self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready())

    @handle_errors
    async def ModelReady(
            self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=frontend.model_ready(self.service, request.name, request.version))

    @handle_errors
    async def ServerMetadata(
            self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=self.server_name, version=__version__,
                                         extensions=list(kserve_v2.EXTENSIONS))

    @handle_errors
    async def ModelMetadata(
            self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        m = frontend.v2_model(self.service, request.name, request.version)
        return kserve_v2_grpc.model_metadata(m.name, m.versions, m.platform, m.signature)

    @handle_errors
    async def ModelConfig(
            self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        return kserve_v2_grpc.model_config(
            frontend.v2_model_config(self.service, request.name, request.version))

    @handle_errors
    async def ModelInfer(
            self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        req = kserve_v2_grpc.decode_request(request)
        result = await frontend.v2_infer(self.service, request.model_name, request.model_version,
                                         req, deadline=deadline(context))
        return kserve_v2_grpc.encode_response(
            model_name=result.model_name, model_version=result.model_version,
            request_id=req.id, outputs=result.outputs, order=result.order)
