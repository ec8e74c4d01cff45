"""The gRPC frontend: TF Serving's PredictionService and ModelService, KServe V2's
GRPCInferenceService, grpc.health.v1 and server reflection, on one ``grpc.aio`` server.

Servicers are thin translators over :class:`corolla.service.PredictionService`; they run on the
event loop and never block it. Build the server with :func:`corolla.grpc.server.build_grpc_server`.
"""
