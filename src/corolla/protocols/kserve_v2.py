"""KServe V2 / Open Inference Protocol REST bodies <-> tensors: pure functions, no I/O.

Requests are JSON (``{"id"?, "parameters"?, "inputs": [...], "outputs"?: [...]}``), optionally
followed by binary tensor data (Triton's binary tensor data extension): the JSON header's length
is the ``Inference-Header-Content-Length`` HTTP header, and each input with parameter
``binary_data_size`` takes that many bytes, in input order, from what follows. Raw data is
flattened row-major little-endian; a BYTES element is a 4-byte little-endian length then its
bytes. JSON BYTES elements are UTF-8 strings, or base64 when the input's ``content_type``
parameter is ``base64`` (MLServer's convention), or ``{"b64": ...}`` objects (TF Serving's).

An output requested with parameter ``classification: k`` comes back as Triton's classification
extension has it: BYTES ``[batch, k]`` of ``b"score:index:label"``, best first.

Responses put an output in binary when its requested ``binary_data`` parameter says so or, by
default, when the request parameter ``binary_data_output`` is true; binary outputs carry
``binary_data_size`` and no ``data``. The gRPC side is :mod:`corolla.protocols.kserve_v2_grpc`.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from corolla import __version__
from corolla.errors import InvalidArgument
from corolla.model_dir import ImagePreprocessing, Signature
from corolla.protocols.kserve_v2_tensors import (
    MAX_ELEMENTS,
    check_shape,
    datatype_of,
    element_count,
    from_raw,
    numpy_of,
    to_raw,
)
from corolla.tensors import V2_DTYPES, decode_base64

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration")
# V2's platform names for Corolla's runtimes, and Triton's backend names (model configuration).
PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorflow": "tensorflow_savedmodel"}
BACKENDS = {"onnx": "onnxruntime", "tensorflow": "tensorflow"}


@dataclass(frozen=True, kw_only=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class InferRequest:
    """A decoded V2 request: inputs by name in request order, plus what to send back."""

    id: str
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: tuple[RequestedOutput, ...] = ()
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)


# ---- JSON tensor data ---------------------------------------------------------------------


def _json_bytes(name: str, x: Any, base64_strings: bool) -> bytes:
    try:
        if isinstance(x, str):
            return decode_base64(x) if base64_strings else x.encode("utf-8")
        if isinstance(x, dict) and len(x) == 1 and isinstance(x.get("b64"), str):
            return decode_base64(x["b64"])
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"input {name!r}: invalid base64 data") from exc
    raise InvalidArgument(f"input {name!r}: BYTES elements must be strings")


def from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any,
              parameters: Mapping[str, Any]) -> np.ndarray:
    """JSON ``data`` (flat or nested, row-major) to an array of ``shape``."""
    if not isinstance(data, list):
        data = [data]
    n = element_count(shape)
    if datatype == "BYTES":
        b64 = parameters.get("content_type") == "base64"
        flat = _flatten(data)
        if len(flat) != n:
            raise InvalidArgument(
                f"input {name!r}: {len(flat)} values but shape {list(shape)} holds {n}")
        out = np.empty(n, dtype=object)
        out[:] = [_json_bytes(name, x, b64) for x in flat]
        return out.reshape(shape)
    dtype = numpy_of(datatype)
    try:
        arr = np.array(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidArgument(f"input {name!r}: data is not a list of {datatype} values") from exc
    if arr.size != n:
        raise InvalidArgument(
            f"input {name!r}: {arr.size} values but shape {list(shape)} holds {n}")
    if dtype.kind == "b" and not _all_bools(data):
        raise InvalidArgument(f"input {name!r}: BOOL data must be true/false")
    return arr.reshape(shape)


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    for x in data:
        out.extend(_flatten(x) if isinstance(x, list) else [x])
    return out


def _all_bools(data: list[Any]) -> bool:
    return all(isinstance(x, bool) for x in _flatten(data))


# ---- REST requests ------------------------------------------------------------------------


def _params(obj: Any, where: str) -> dict[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidArgument(f"{where}: parameters must be an object")
    return params


def decode_request(body: bytes, header_length: int | None = None, *,
                   max_elements: int = MAX_ELEMENTS) -> InferRequest:
    """A V2 REST infer body (with the binary extension when ``header_length`` is given)."""
    if header_length is not None:
        if not 0 <= header_length <= len(body):
            raise InvalidArgument(
                f"{HEADER_LENGTH} {header_length} is outside the body of {len(body)} bytes")
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"invalid JSON in the request: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidArgument("the request must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidArgument("the request must have a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for i, spec in enumerate(raw_inputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidArgument(f"inputs[{i}] must be an object with a 'name'")
        name = spec["name"]
        if name in inputs:
            raise InvalidArgument(f"input {name!r} appears twice")
        datatype = spec.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidArgument(f"input {name!r}: missing 'datatype'")
        shape = check_shape(name, spec.get("shape"), max_elements=max_elements)
        params = _params(spec, f"input {name!r}")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument(f"input {name!r}: invalid binary_data_size {size!r}")
            if offset + size > len(binary):
                raise InvalidArgument(
                    f"input {name!r}: binary_data_size {size} overruns the binary data")
            arr = from_raw(name, datatype, shape, binary[offset:offset + size])
            offset += size
        elif "data" in spec:
            arr = from_json(name, datatype, shape, spec["data"], params)
        else:
            raise InvalidArgument(f"input {name!r} has neither 'data' nor binary_data_size")
        inputs[name], datatypes[name] = arr, datatype
    if offset != len(binary):
        raise InvalidArgument(f"{len(binary) - offset} bytes of binary data belong to no input")
    params = _params(doc, "request")
    return InferRequest(
        id=str(doc.get("id") or ""), inputs=inputs, datatypes=datatypes,
        outputs=_requested_outputs(doc.get("outputs")),
        binary_output=bool(params.get("binary_data_output", False)), parameters=params)


def _requested_outputs(raw: Any) -> tuple[RequestedOutput, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidArgument("'outputs' must be a list")
    out = []
    for i, spec in enumerate(raw):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidArgument(f"outputs[{i}] must be an object with a 'name'")
        params = _params(spec, f"output {spec['name']!r}")
        binary = params.get("binary_data")
        out.append(RequestedOutput(name=spec["name"], parameters=params,
                                   binary=None if binary is None else bool(binary)))
    return tuple(out)


# ---- REST responses -----------------------------------------------------------------------


def _json_data(array: np.ndarray) -> Any:
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype == object:
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    return flat


def encode_response(*, model_name: str, model_version: str, request_id: str,
                    outputs: Mapping[str, np.ndarray], request: InferRequest | None = None,
                    parameters: Mapping[str, Any] | None = None) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output went binary."""
    wanted = {o.name: o for o in request.outputs} if request else {}
    default_binary = request.binary_output if request else False
    order = list(wanted) if wanted else list(outputs)
    items, blobs = [], []
    for name in order:
        arr = outputs[name]
        item: dict[str, Any] = {"name": name, "datatype": datatype_of(arr),
                                "shape": list(arr.shape)}
        binary = wanted[name].binary if name in wanted else None
        if default_binary if binary is None else binary:
            raw = to_raw(arr)
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = _json_data(arr)
        items.append(item)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = dict(parameters)
    doc["outputs"] = items
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def classification_count(output: RequestedOutput) -> int:
    """The ``classification`` parameter of a requested output (0 when absent)."""
    k = output.parameters.get("classification", 0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidArgument(
            f"output {output.name!r}: classification must be a positive integer, got {k!r}")
    return k


# ---- metadata -----------------------------------------------------------------------------


def server_metadata(name: str = "corolla") -> dict[str, Any]:
    return {"name": name, "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(name: str, versions: Sequence[int], platform: str, signature: Signature
                   ) -> dict[str, Any]:
    def tensors(specs: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"name": alias, "datatype": V2_DTYPES[t.dtype],
                 "shape": [-1] if t.shape is None else list(t.shape)}
                for alias, t in specs.items()]

    return {"name": name, "versions": [str(v) for v in versions],
            "platform": PLATFORMS.get(platform, platform),
            "inputs": tensors(signature.inputs), "outputs": tensors(signature.outputs)}


def _config_type(dtype: str) -> str:
    v2 = V2_DTYPES[dtype]
    return "TYPE_STRING" if v2 == "BYTES" else f"TYPE_{v2}"


def model_config(name: str, platform: str, signature: Signature,
                 preprocessing: ImagePreprocessing | None, max_batch_size: int
                 ) -> dict[str, Any]:
    """Triton's model configuration extension (``GET /v2/models/{m}/config``, gRPC
    ``ModelConfig``): ModelConfig's JSON form, with Triton's field and enum names.

    When every input and output has a leading -1 dimension the model is reported as batching
    (``max_batch_size`` > 0) and ``dims`` leave that dimension out, as Triton's config does;
    otherwise ``max_batch_size`` is 0 and ``dims`` are the full shapes. The image input of a
    model with preprocessing gets its layout as ``format`` (FORMAT_NHWC / FORMAT_NCHW), which
    clients such as Triton's image_client read to lay out their pixels.
    """
    specs = [*signature.inputs.values(), *signature.outputs.values()]
    batched = max_batch_size > 0 and all(t.batched for t in specs)

    def dims(shape: tuple[int, ...] | None) -> list[int]:
        if shape is None:
            return [-1]
        return list(shape[1:] if batched else shape)

    inputs = []
    for alias, t in signature.inputs.items():
        entry: dict[str, Any] = {"name": alias, "data_type": _config_type(t.dtype),
                                 "format": "FORMAT_NONE", "dims": dims(t.shape)}
        if (preprocessing is not None and preprocessing.input in (alias, t.name)
                and len(entry["dims"]) == 3):
            entry["format"] = f"FORMAT_{preprocessing.layout}"
        inputs.append(entry)
    outputs = [{"name": alias, "data_type": _config_type(t.dtype), "dims": dims(t.shape)}
               for alias, t in signature.outputs.items()]
    return {"name": name, "platform": PLATFORMS.get(platform, platform),
            "backend": BACKENDS.get(platform, platform),
            "max_batch_size": max_batch_size if batched else 0,
            "input": inputs, "output": outputs}
