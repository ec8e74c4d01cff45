"""ModelMetadata -> TensorFlow SignatureDef protos (gRPC GetModelMetadata)."""

from __future__ import annotations

from corolla.model_dir import ModelMetadata, Signature, TensorSpec
from corolla.protocols.signature_def import model_metadata_response, signature_def_map
from corolla.protos.gen.tensorflow.core.framework import types_pb2
from corolla.protos.gen.tensorflow_serving.apis import get_model_metadata_pb2

METADATA = ModelMetadata(signatures={
    "serving_default": Signature(
        inputs={"image": TensorSpec(name="input_1", dtype="float32", shape=(-1, 224, 224, 3))},
        outputs={"scores": TensorSpec(name="probs", dtype="float32", shape=(-1, 5)),
                 "raw": TensorSpec(name="raw", dtype="string", shape=None)}),
    "other": Signature(method_name="tensorflow/serving/classify",
                       inputs={"x": TensorSpec(name="x", dtype="uint8", shape=())}, outputs={}),
})


def test_signature_def_map() -> None:
    m = signature_def_map(METADATA)
    assert set(m.signature_def) == {"serving_default", "other"}
    sd = m.signature_def["serving_default"]
    assert sd.method_name == "tensorflow/serving/predict"
    image = sd.inputs["image"]
    assert image.name == "input_1" and image.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in image.tensor_shape.dim] == [-1, 224, 224, 3]
    assert sd.outputs["raw"].dtype == types_pb2.DT_STRING
    assert sd.outputs["raw"].tensor_shape.unknown_rank
    other = m.signature_def["other"]
    assert other.method_name == "tensorflow/serving/classify"
    assert other.inputs["x"].dtype == types_pb2.DT_UINT8
    scalar = other.inputs["x"].tensor_shape
    assert not scalar.dim and not scalar.unknown_rank


def test_model_metadata_response_round_trip() -> None:
    resp = model_metadata_response("flowers", 3, METADATA)
    wire = get_model_metadata_pb2.GetModelMetadataResponse.FromString(resp.SerializeToString())
    assert wire.model_spec.name == "flowers" and wire.model_spec.version.value == 3
    any_msg = wire.metadata["signature_def"]
    assert any_msg.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    back = get_model_metadata_pb2.SignatureDefMap()
    assert any_msg.Unpack(back)
    assert back == signature_def_map(METADATA)
