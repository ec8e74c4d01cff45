"""A version's :class:`~corolla.model_dir.ModelMetadata` as TensorFlow ``SignatureDef`` protos.

TF Serving's gRPC ``GetModelMetadata`` answers with ``metadata["signature_def"]``: an ``Any``
holding a ``tensorflow.serving.SignatureDefMap``. Corolla builds the same from its metadata file:
each alias's ``TensorInfo`` carries the graph tensor name, dtype and shape (-1 for unknown
dimensions, ``unknown_rank`` for unknown rank). Pure functions.
"""

from __future__ import annotations

from typing import Any

from corolla.model_dir import ModelMetadata, Signature, TensorSpec
from corolla.protos.gen.tensorflow.core.protobuf import meta_graph_pb2
from corolla.protos.gen.tensorflow_serving.apis import get_model_metadata_pb2
from corolla.tensors import TF_DTYPES

SIGNATURE_DEF_FIELD = "signature_def"


def tensor_info(spec: TensorSpec, out: Any = None) -> Any:
    info = meta_graph_pb2.TensorInfo() if out is None else out
    info.name = spec.name
    info.dtype = TF_DTYPES[spec.dtype]
    if spec.shape is None:
        info.tensor_shape.unknown_rank = True
    else:
        for d in spec.shape:
            info.tensor_shape.dim.add().size = d
    return info


def signature_def(sig: Signature, out: Any = None) -> Any:
    sd = meta_graph_pb2.SignatureDef() if out is None else out
    sd.method_name = sig.method_name
    for alias, spec in sig.inputs.items():
        tensor_info(spec, sd.inputs[alias])
    for alias, spec in sig.outputs.items():
        tensor_info(spec, sd.outputs[alias])
    return sd


def signature_def_map(metadata: ModelMetadata) -> Any:
    """A ``tensorflow.serving.SignatureDefMap`` of every signature in ``metadata``."""
    m = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in metadata.signatures.items():
        signature_def(sig, m.signature_def[key])
    return m


def model_metadata_response(name: str, version: int, metadata: ModelMetadata) -> Any:
    """A ``GetModelMetadataResponse`` with ``metadata["signature_def"]`` filled in."""
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    resp.model_spec.name = name
    resp.model_spec.version.value = version
    resp.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(metadata))
    return resp
