"""KServe V2 gRPC messages (``inference.ModelInferRequest`` ...) <-> tensors: pure functions.

Inputs arrive either all in ``raw_input_contents`` (one entry per input, in order; what
tritonclient sends) or each in its typed ``contents`` field; FP16 has no typed field and must be
raw. Outputs go back in ``raw_output_contents`` by default, as Triton does (``raw=False`` uses the
typed fields, which FP16 outputs cannot use). Raw encodings are those of
:mod:`corolla.protocols.kserve_v2_tensors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format

from corolla.errors import InvalidArgument
from corolla.model_dir import Signature
from corolla.protocols.kserve_v2 import PLATFORMS, InferRequest, RequestedOutput
from corolla.protocols.kserve_v2_tensors import (
    MAX_ELEMENTS,
    check_shape,
    datatype_of,
    element_count,
    from_raw,
    numpy_of,
    to_raw,
)
from corolla.protos.gen import grpc_predict_v2_pb2 as pb
from corolla.tensors import V2_DTYPES

# The typed contents field of each datatype.
_CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
_CONTENTS_DTYPE: dict[str, Any] = {
    "bool_contents": np.bool_, "int_contents": np.int32, "int64_contents": np.int64,
    "uint_contents": np.uint32, "uint64_contents": np.uint64, "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}  # fmt: skip


def parameter_value(p: Any) -> Any:
    """An ``InferParameter``'s Python value (None when unset)."""
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def set_parameter(p: Any, value: Any) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def _parameters(params: Any) -> dict[str, Any]:
    return {k: parameter_value(v) for k, v in params.items()}


def _from_contents(name: str, datatype: str, shape: tuple[int, ...], contents: Any
                   ) -> np.ndarray:
    field = _CONTENTS.get(datatype)
    if field is None:
        numpy_of(datatype)  # unsupported datatypes fail here with their name
        raise InvalidArgument(f"input {name!r}: {datatype} data must be in raw_input_contents")
    values = getattr(contents, field)
    n = element_count(shape)
    if len(values) != n:
        raise InvalidArgument(
            f"input {name!r}: {len(values)} values in {field} but shape {list(shape)} holds {n}")
    if datatype == "BYTES":
        out = np.empty(n, dtype=object)
        out[:] = list(values)
        return out.reshape(shape)
    arr = np.array(values, dtype=_CONTENTS_DTYPE[field])
    dtype = numpy_of(datatype)
    if arr.dtype != dtype:
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise InvalidArgument(f"input {name!r}: values out of range for {datatype}")
        arr = arr.astype(dtype)
    return arr.reshape(shape)


def decode_request(req: Any, *, max_elements: int = MAX_ELEMENTS) -> InferRequest:
    """A ``ModelInferRequest`` as an :class:`InferRequest`."""
    if not req.inputs:
        raise InvalidArgument("the request has no inputs")
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for i, t in enumerate(req.inputs):
        name = t.name
        if name in inputs:
            raise InvalidArgument(f"input {name!r} appears twice")
        shape = check_shape(name, list(t.shape), max_elements=max_elements)
        if raw:
            if t.HasField("contents"):
                raise InvalidArgument(
                    f"input {name!r}: contents must be empty when raw_input_contents is used")
            arr = from_raw(name, t.datatype, shape, raw[i])
        else:
            arr = _from_contents(name, t.datatype, shape, t.contents)
        inputs[name], datatypes[name] = arr, t.datatype
    outputs = tuple(RequestedOutput(name=o.name, parameters=_parameters(o.parameters))
                    for o in req.outputs)
    return InferRequest(id=req.id, inputs=inputs, datatypes=datatypes, outputs=outputs,
                        parameters=_parameters(req.parameters))


def encode_response(*, model_name: str, model_version: str, request_id: str,
                    outputs: Mapping[str, np.ndarray], order: Sequence[str] = (),
                    raw: bool = True) -> Any:
    """A ``ModelInferResponse``; ``order`` (requested outputs) defaults to ``outputs``' order."""
    resp = pb.ModelInferResponse(model_name=model_name, model_version=model_version,
                                 id=request_id)
    for name in order or list(outputs):
        arr = outputs[name]
        datatype = datatype_of(arr)
        t = resp.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        if raw:
            resp.raw_output_contents.append(to_raw(arr))
        elif datatype == "BYTES":
            t.contents.bytes_contents.extend(
                x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in arr.reshape(-1))
        elif datatype == "FP16":
            raise InvalidArgument(f"output {name!r}: FP16 needs raw_output_contents")
        else:
            getattr(t.contents, _CONTENTS[datatype]).extend(arr.reshape(-1).tolist())
    return resp


def encode_request(inputs: Mapping[str, np.ndarray], *, model_name: str, model_version: str = "",
                   request_id: str = "", outputs: Sequence[str] = ()) -> Any:
    """A ``ModelInferRequest`` with raw contents (the client side)."""
    req = pb.ModelInferRequest(model_name=model_name, model_version=model_version, id=request_id)
    for name, arr in inputs.items():
        req.inputs.add(name=name, datatype=datatype_of(arr), shape=arr.shape)
        req.raw_input_contents.append(to_raw(arr))
    for name in outputs:
        req.outputs.add(name=name)
    return req


def decode_response(resp: Any) -> dict[str, np.ndarray]:
    """A ``ModelInferResponse``'s outputs (raw or typed) as arrays (the client side)."""
    out: dict[str, np.ndarray] = {}
    raw = resp.raw_output_contents
    for i, t in enumerate(resp.outputs):
        shape = tuple(t.shape)
        if i < len(raw):
            out[t.name] = from_raw(t.name, t.datatype, shape, raw[i])
        else:
            out[t.name] = _from_contents(t.name, t.datatype, shape, t.contents)
    return out


def model_metadata(name: str, versions: Sequence[int], platform: str, signature: Signature
                   ) -> Any:
    resp = pb.ModelMetadataResponse(name=name, versions=[str(v) for v in versions],
                                    platform=PLATFORMS.get(platform, platform))
    for specs, target in ((signature.inputs, resp.inputs), (signature.outputs, resp.outputs)):
        for alias, t in specs.items():
            target.add(name=alias, datatype=V2_DTYPES[t.dtype],
                       shape=[-1] if t.shape is None else list(t.shape))
    return resp


def model_config(config: Mapping[str, Any]) -> Any:
    """A ModelConfigResponse from :func:`corolla.protocols.kserve_v2.model_config`'s JSON."""
    resp = pb.ModelConfigResponse()
    json_format.ParseDict(config, resp.config)
    return resp
