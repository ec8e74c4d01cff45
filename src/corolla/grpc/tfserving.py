"""TF Serving's gRPC API: ``tensorflow.serving.PredictionService`` and ``ModelService``.

Thin translators over :class:`PredictionService`: protos in, :class:`ModelSpec` and tensors to
the service, protos out. String (DT_STRING) inputs of a model input that is not a string are
encoded images, decoded by the service exactly as REST's ``{"b64": ...}`` values are. Outputs use
the typed ``*_val`` fields, as TF Serving's do. Errors leave through :func:`handle_errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from corolla import admission, frontend
from corolla.config import ModelConfig, ReloadConfig, model_configs_from_proto
from corolla.errors import Code, InvalidArgument
from corolla.grpc.errors import deadline, handle_errors
from corolla.protocols import tensor_proto, tf_example, tf_inference
from corolla.protocols.signature_def import SIGNATURE_DEF_FIELD, model_metadata_response
from corolla.protos.gen.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from corolla.service import ClassifyResult, ModelSpec, PredictionService
from corolla.tensors import Expansion

log = logging.getLogger("corolla.grpc")

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def model_spec(msg: model_pb2.ModelSpec, has: bool = True) -> ModelSpec:
    """A request's ``ModelSpec`` proto as the service's ModelSpec."""
    if not has:
        raise InvalidArgument("Missing ModelSpec")
    which = msg.WhichOneof("version_choice")
    return ModelSpec(name=msg.name,
                     version=msg.version.value if which == "version" else None,
                     label=msg.version_label if which == "version_label" else None,
                     signature_name=msg.signature_name)


def fill_model_spec(out: model_pb2.ModelSpec, name: str, version: int,
                    signature_name: str = "") -> None:
    out.name = name
    out.version.value = version
    if signature_name:
        out.signature_name = signature_name


def _not_a_regression(name: str, method_name: str) -> InvalidArgument:
    # TF Serving's answer (INVALID_ARGUMENT) for a signature that is not a regression one.
    return InvalidArgument(
        f"Expected regression signature method_name to be {REGRESS_METHOD}. Was: "
        f"{method_name}. Model {name} has no regression signature; use Predict or Classify")


class TfServingPrediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: PredictionService) -> None:
        self.service = service

    @handle_errors
    async def Predict(
            self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        spec = model_spec(request.model_spec, request.HasField("model_spec"))
        # One allowance for the whole request: padding short typed fields is bounded in all.
        expansion = Expansion(self.service.options.max_decoded_image_bytes)
        if admission.active():
            await admission.reserve(
                min(expansion.limit,
                    sum(tensor_proto.padding_bytes(tp) for tp in request.inputs.values())),
                "padding the request's tensors to their shapes")
        inputs = {alias: tensor_proto.to_numpy(tp, expansion=expansion)
                  for alias, tp in request.inputs.items()}
        result = await self.service.predict(spec, inputs,
                                            output_filter=tuple(request.output_filter),
                                            deadline=deadline(context), image_rows=True)
        resp = predict_pb2.PredictResponse()
        fill_model_spec(resp.model_spec, result.name, result.version, result.signature_name)
        for alias, array in result.outputs.items():
            tensor_proto.from_numpy(array, out=resp.outputs[alias])
        return resp

    async def _examples(self, spec: ModelSpec, input_msg: input_pb2.Input, method: str,
                        context: grpc.aio.ServicerContext) -> frontend.ExampleResult | None:
        """Run a SavedModel classify/regress signature on serialized tf.Examples, or None when
        the model takes the label path instead."""
        _, md = self.service.metadata(spec)
        if not tf_inference.wants_examples(md, spec.signature_name, method):
            return None
        return await frontend.run_examples(
            self.service, spec, tf_inference.serialize_input(input_msg), method,
            deadline=deadline(context))

    async def _classify(self, spec: ModelSpec, input_msg: input_pb2.Input,
                        context: grpc.aio.ServicerContext) -> ClassifyResult:
        _, metadata = self.service.metadata(spec)
        sig = metadata.signatures.get(spec.signature)
        if sig is None:
            raise InvalidArgument(f"Serving signature name: \"{spec.signature}\" not found in "
                                  f"signature def (model {spec.name})")
        inputs = tf_example.to_inputs(tf_example.examples_of(input_msg), sig)
        return await self.service.classify(spec, inputs, deadline=deadline(context),
                                           image_rows=True)

    @staticmethod
    def _fill_classes(out: classification_pb2.ClassificationResult,
                      result: ClassifyResult) -> None:
        for row in result.classes:
            c = out.classifications.add()
            for label, score in row:
                c.classes.add(label=label, score=score)

    @handle_errors
    async def Classify(
            self, request: classification_pb2.ClassificationRequest,
            context: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        spec = model_spec(request.model_spec, request.HasField("model_spec"))
        resp = classification_pb2.ClassificationResponse()
        ex = await self._examples(spec, request.input, CLASSIFY_METHOD, context)
        if ex is not None:
            fill_model_spec(resp.model_spec, ex.name, ex.version, ex.signature_name)
            tf_inference.classification_result(ex.classifications or [], resp.result)
            return resp
        result = await self._classify(spec, request.input, context)
        fill_model_spec(resp.model_spec, result.name, result.version, result.signature_name)
        self._fill_classes(resp.result, result)
        return resp

    @handle_errors
    async def Regress(
            self, request: regression_pb2.RegressionRequest, context: grpc.aio.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        spec = model_spec(request.model_spec, request.HasField("model_spec"))
        ex = await self._examples(spec, request.input, REGRESS_METHOD, context)
        if ex is None:
            _, md = self.service.metadata(spec)
            sig = md.signatures.get(spec.signature)
            raise _not_a_regression(spec.name, sig.method_name if sig else "(none)")
        resp = regression_pb2.RegressionResponse()
        fill_model_spec(resp.model_spec, ex.name, ex.version, ex.signature_name)
        tf_inference.regression_result(ex.regressions or [], resp.result)
        return resp

    @handle_errors
    async def MultiInference(
            self, request: inference_pb2.MultiInferenceRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        if not request.tasks:
            raise InvalidArgument("MultiInferenceRequest must have at least one task")
        specs = [model_spec(t.model_spec, t.HasField("model_spec")) for t in request.tasks]
        if len({s.name for s in specs}) != 1:
            raise InvalidArgument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name")
        resp = inference_pb2.MultiInferenceResponse()
        for task, spec in zip(request.tasks, specs, strict=True):
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise InvalidArgument(f"Unsupported signature method_name: {task.method_name}")
            ex = await self._examples(spec, request.input, task.method_name, context)
            if ex is not None:
                out = resp.results.add()
                fill_model_spec(out.model_spec, ex.name, ex.version, ex.signature_name)
                if task.method_name == CLASSIFY_METHOD:
                    tf_inference.classification_result(ex.classifications or [],
                                                       out.classification_result)
                else:
                    tf_inference.regression_result(ex.regressions or [], out.regression_result)
                continue
            if task.method_name == REGRESS_METHOD:
                raise _not_a_regression(spec.name, "tensorflow/serving/predict")
            result = await self._classify(spec, request.input, context)
            out = resp.results.add()
            fill_model_spec(out.model_spec, result.name, result.version, result.signature_name)
            self._fill_classes(out.classification_result, result)
        return resp

    @handle_errors
    async def GetModelMetadata(
            self, request: get_model_metadata_pb2.GetModelMetadataRequest,
            context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        spec = model_spec(request.model_spec, request.HasField("model_spec"))
        if not request.metadata_field:
            raise InvalidArgument(
                "GetModelMetadataRequest must specify at least one metadata_field")
        for name in request.metadata_field:
            if name != SIGNATURE_DEF_FIELD:
                raise InvalidArgument(f"Metadata field {name} is not supported")
        version, metadata = self.service.metadata(spec)
        return model_metadata_response(spec.name, version, metadata)


class TfServingModel(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: PredictionService, *, reload_timeout: float | None = 600.0,
                 reload_config: ReloadConfig | None = None) -> None:
        self.service = service
        self.reload_timeout = reload_timeout
        self._reload = reload_config or self._reload_here

    async def _reload_here(self, configs: Sequence[ModelConfig], timeout: float | None) -> None:
        await self.service.reload_config(configs, timeout=timeout)

    @handle_errors
    async def GetModelStatus(
            self, request: get_model_status_pb2.GetModelStatusRequest,
            context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = model_spec(request.model_spec, request.HasField("model_spec"))
        resp = get_model_status_pb2.GetModelStatusResponse()
        for status in self.service.statuses(spec.name, spec.version, spec.label):
            out = resp.model_version_status.add(version=status.version, state=int(status.state))
            err = status.error
            out.status.error_code = err.code.value if err is not None else Code.OK.value
            out.status.error_message = err.message if err is not None else status.note
        return resp

    @handle_errors
    async def HandleReloadConfigRequest(
            self, request: model_management_pb2.ReloadConfigRequest,
            context: grpc.aio.ServicerContext) -> model_management_pb2.ReloadConfigResponse:
        configs = model_configs_from_proto(request.config)
        log.info("ReloadConfig: serving %s", [c.name for c in configs])
        remaining = context.time_remaining()
        timeout = remaining if remaining is not None else self.reload_timeout
        await self._reload(configs, timeout)
        return model_management_pb2.ReloadConfigResponse()  # status: OK (the default)
