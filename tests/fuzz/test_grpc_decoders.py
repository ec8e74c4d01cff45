"""Every gRPC request decoder under hostile input (issue 22, Tests): TF Serving's
PredictionService (TensorProtos in every dtype and encoding, tf.Examples) and ModelService, and
KServe V2's ModelInfer (raw and typed contents), as messages and as arbitrary bytes.

Properties: never INTERNAL, UNKNOWN or DATA_LOSS; and no request makes the server allocate more
than a small multiple of its size plus the decoded-image budget (tracemalloc)."""

from __future__ import annotations

from typing import Any

import grpc
from conftest import Live, allocation_bound
from hypothesis import given, note
from hypothesis import strategies as st
from strategies import DIMS, V2_TYPES, image_bytes

from corolla.grpc.server import API_SERVICES
from corolla.protos.gen import grpc_predict_v2_pb2 as v2pb
from corolla.protos.gen.tensorflow.core.example import example_pb2, feature_pb2
from corolla.protos.gen.tensorflow.core.framework import tensor_pb2
from corolla.protos.gen.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    predict_pb2,
    regression_pb2,
)
from corolla.protos.pool import POOL

SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
MODELS = st.sampled_from(["colours", "fake", "nope", ""])
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
UINT64 = st.integers(0, (1 << 64) - 1)
FLOAT = st.floats(width=32)


def _call(live: Live, method: str, request: bytes) -> None:
    call = live.channel.unary_unary(method, request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)

    def run() -> grpc.StatusCode:
        try:
            call(request, timeout=60)
        except grpc.RpcError as exc:
            note(f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]
            return exc.code()  # type: ignore[attr-defined,no-any-return]
        return grpc.StatusCode.OK

    code, peak = live.measure(run)
    assert code not in SERVER_FAULTS
    assert peak <= allocation_bound(len(request)), (peak, len(request))


# ---- TensorProto ----------------------------------------------------------------------------


@st.composite
def tensor_protos(draw: st.DrawFn) -> Any:
    tp = tensor_pb2.TensorProto(dtype=draw(st.integers(0, 30) | st.sampled_from([101, 119])))
    for d in draw(st.lists(DIMS, max_size=5)):
        tp.tensor_shape.dim.add().size = d
    tp.tensor_shape.unknown_rank = draw(st.integers(0, 9)) == 0
    which = draw(st.sampled_from(["content", "typed", "typed", "strings", "images", "none"]))
    if which == "content":
        tp.tensor_content = draw(st.binary(max_size=256))
    elif which == "typed":
        field, values = draw(st.sampled_from([
            ("float_val", st.lists(FLOAT, max_size=64)),
            ("double_val", st.lists(st.floats(), max_size=32)),
            ("int_val", st.lists(INT32, max_size=32)),
            ("int64_val", st.lists(INT64, max_size=32)),
            ("uint32_val", st.lists(st.integers(0, (1 << 32) - 1), max_size=32)),
            ("uint64_val", st.lists(UINT64, max_size=32)),
            ("bool_val", st.lists(st.booleans(), max_size=32)),
            ("half_val", st.lists(INT32, max_size=32)),
        ]).flatmap(lambda fv: st.tuples(st.just(fv[0]), fv[1])))
        getattr(tp, field).extend(values)
    elif which == "strings":
        tp.string_val.extend(draw(st.lists(st.binary(max_size=20), max_size=8)))
    elif which == "images":
        tp.string_val.extend(draw(st.lists(image_bytes(), max_size=3)))
    return tp


def _spec(msg: Any, draw: st.DrawFn) -> None:
    msg.name = draw(MODELS)
    choice = draw(st.sampled_from(["none", "version", "label"]))
    if choice == "version":
        msg.version.value = draw(st.integers(-3, 5) | INT64)
    elif choice == "label":
        msg.version_label = draw(st.sampled_from(["stable", "", "x"]))
    msg.signature_name = draw(st.sampled_from(["", "serving_default", "nope"]))


@st.composite
def predict_requests(draw: st.DrawFn) -> bytes:
    req = predict_pb2.PredictRequest()
    if draw(st.booleans()):
        _spec(req.model_spec, draw)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["images", "x", "y", ""]))
        req.inputs[name].CopyFrom(draw(tensor_protos()))
    req.output_filter.extend(draw(st.lists(st.sampled_from(
        ["probabilities", "y", "nope", ""]), max_size=3)))
    return req.SerializeToString()  # type: ignore[no-any-return]


@given(request=predict_requests())
def test_tf_predict(live: Live, request: bytes) -> None:
    _call(live, "/tensorflow.serving.PredictionService/Predict", request)


# ---- tf.Example inputs (Classify, Regress, MultiInference) -----------------------------------


@st.composite
def features(draw: st.DrawFn) -> Any:
    f = feature_pb2.Features()
    for _ in range(draw(st.integers(0, 3))):
        feat = f.feature[draw(st.sampled_from(["x", "images", "y", ""]))]
        kind = draw(st.sampled_from(["floats", "ints", "bytes", "images", "empty"]))
        if kind == "floats":
            feat.float_list.value.extend(draw(st.lists(FLOAT, max_size=16)))
        elif kind == "ints":
            feat.int64_list.value.extend(draw(st.lists(INT64, max_size=16)))
        elif kind == "bytes":
            feat.bytes_list.value.extend(draw(st.lists(st.binary(max_size=16), max_size=4)))
        elif kind == "images":
            feat.bytes_list.value.extend(draw(st.lists(image_bytes(), max_size=2)))
    return f


@st.composite
def inputs(draw: st.DrawFn) -> Any:
    msg = input_pb2.Input()
    if draw(st.booleans()):
        for _ in range(draw(st.integers(0, 3))):
            msg.example_list.examples.add().features.CopyFrom(draw(features()))
    else:
        ctx = msg.example_list_with_context
        ctx.context.features.CopyFrom(draw(features()))
        for _ in range(draw(st.integers(0, 3))):
            ctx.examples.add().features.CopyFrom(draw(features()))
    return msg


@given(data=st.data())
def test_tf_classify_regress_multi(live: Live, data: st.DataObject) -> None:
    draw = data.draw
    kind = draw(st.sampled_from(["Classify", "Regress", "MultiInference"]))
    if kind == "MultiInference":
        req: Any = inference_pb2.MultiInferenceRequest()
        for _ in range(draw(st.integers(0, 3))):
            task = req.tasks.add()
            _spec(task.model_spec, draw)
            task.method_name = draw(st.sampled_from([
                "tensorflow/serving/classify", "tensorflow/serving/regress", "x"]))
    else:
        req = (classification_pb2.ClassificationRequest() if kind == "Classify"
               else regression_pb2.RegressionRequest())
        if draw(st.booleans()):
            _spec(req.model_spec, draw)
    req.input.CopyFrom(draw(inputs()))
    _call(live, f"/tensorflow.serving.PredictionService/{kind}", req.SerializeToString())


@given(data=st.data())
def test_tf_metadata_and_status(live: Live, data: st.DataObject) -> None:
    draw = data.draw
    if draw(st.booleans()):
        req: Any = get_model_metadata_pb2.GetModelMetadataRequest()
        req.metadata_field.extend(draw(st.lists(st.sampled_from(
            ["signature_def", "x", ""]), max_size=3)))
        method = "/tensorflow.serving.PredictionService/GetModelMetadata"
    else:
        req = get_model_status_pb2.GetModelStatusRequest()
        method = "/tensorflow.serving.ModelService/GetModelStatus"
    if draw(st.booleans()):
        _spec(req.model_spec, draw)
    _call(live, method, req.SerializeToString())


# ---- KServe V2 ModelInfer ---------------------------------------------------------------------

_CONTENTS = {
    "bool_contents": st.lists(st.booleans(), max_size=16),
    "int_contents": st.lists(INT32, max_size=16),
    "int64_contents": st.lists(INT64, max_size=16),
    "uint_contents": st.lists(st.integers(0, (1 << 32) - 1), max_size=16),
    "uint64_contents": st.lists(UINT64, max_size=16),
    "fp32_contents": st.lists(FLOAT, max_size=64),
    "fp64_contents": st.lists(st.floats(), max_size=16),
    "bytes_contents": st.lists(st.binary(max_size=16) | image_bytes(), max_size=3),
}


@st.composite
def infer_requests(draw: st.DrawFn) -> bytes:
    req = v2pb.ModelInferRequest(model_name=draw(MODELS),
                                 model_version=draw(st.sampled_from(["", "1", "9", "x", "-1"])),
                                 id=draw(st.text(max_size=8)))
    raw = draw(st.booleans())
    for i in range(draw(st.integers(0, 3))):
        t = req.inputs.add(name=draw(st.sampled_from(["images", "x", f"in{i}"])),
                           datatype=draw(st.sampled_from(V2_TYPES)),
                           shape=draw(st.lists(DIMS, max_size=5)))
        if raw:
            req.raw_input_contents.append(draw(st.binary(max_size=256) | image_bytes().map(
                lambda b: len(b).to_bytes(4, "little") + b)))
        elif draw(st.booleans()):
            field = draw(st.sampled_from(sorted(_CONTENTS)))
            getattr(t.contents, field).extend(draw(_CONTENTS[field]))
    if raw and draw(st.integers(0, 4)) == 0:
        req.raw_input_contents.append(b"extra")
    for _ in range(draw(st.integers(0, 2))):
        out = req.outputs.add(name=draw(st.sampled_from(["probabilities", "y", "nope"])))
        if draw(st.booleans()):
            out.parameters["classification"].int64_param = draw(st.integers(-3, 1 << 40))
    return req.SerializeToString()  # type: ignore[no-any-return]


@given(request=infer_requests())
def test_v2_model_infer(live: Live, request: bytes) -> None:
    _call(live, "/inference.GRPCInferenceService/ModelInfer", request)


@given(data=st.data())
def test_v2_model_queries(live: Live, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(["ModelReady", "ModelMetadata", "ModelConfig"]))
    msg = getattr(v2pb, f"{method}Request")(
        name=data.draw(MODELS), version=data.draw(st.sampled_from(["", "1", "2", "x", "01"])))
    _call(live, f"/inference.GRPCInferenceService/{method}", msg.SerializeToString())


# ---- arbitrary bytes for every method ---------------------------------------------------------

_METHODS = [f"/{s}/{m.name}" for s in API_SERVICES for m in POOL.FindServiceByName(s).methods
            if m.name != "HandleReloadConfigRequest"]  # (that one reloads the models)


@given(method=st.sampled_from(_METHODS), raw=st.binary(max_size=200))
def test_arbitrary_bytes(live: Live, method: str, raw: bytes) -> None:
    _call(live, method, raw)


@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_as_example_input(live: Live, raw: bytes) -> None:
    """Bytes inside a valid envelope: a Classify whose serialized Example is garbage."""
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "colours"
    ex = example_pb2.Example()
    req.input.example_list.examples.append(ex)
    body = req.SerializeToString() + raw
    _call(live, "/tensorflow.serving.PredictionService/Classify", body)
