"""TensorFlow Serving's REST JSON <-> tensors: pure functions, no I/O.

Request bodies: ``{"signature_name"?, "instances": [...]}`` (row format) or
``{"signature_name"?, "inputs": ...}`` (columnar); binary values as ``{"b64": "..."}``.
Responses: ``{"predictions": [...]}`` for row requests and ``{"outputs": ...}`` for columnar
ones, shaped exactly as TF Serving shapes them; outputs whose alias ends in ``_bytes`` and string
outputs that are not UTF-8 come back as ``{"b64": ...}``.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import orjson

from corolla.errors import InvalidArgument
from corolla.model_dir import ModelMetadata, Signature
from corolla.repository.manager import VersionStatus
from corolla.tensors import TF_DTYPE_NAMES, Tensors, decode_b64_value

JSON = Any


def loads(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        # TF Serving accepts NaN and Infinity literals; orjson does not. Retry with the slower
        # standard parser, which does.
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # Recursion: too deep
            raise InvalidArgument(f"JSON Parse error: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidArgument("JSON Value: the request body must be a JSON object")
    return doc


def _is_b64(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1 and "b64" in v


def _leaves_to_object(value: Any) -> np.ndarray:
    """Nested lists of strings / b64 objects -> object array of bytes (rectangular)."""

    def shape_of(v: Any) -> tuple[int, ...]:
        if isinstance(v, list):
            if not v:
                return (0,)
            inner = shape_of(v[0])
            for x in v[1:]:
                if shape_of(x) != inner:
                    raise InvalidArgument(
                        "Expecting tensor elements of the same shape (the list is ragged)")
            return (len(v), *inner)
        return ()

    def leaf(v: Any) -> bytes:
        if _is_b64(v):
            return decode_b64_value(v["b64"])
        if isinstance(v, str):
            return v.encode("utf-8")
        raise InvalidArgument(
            "Expecting all values of a tensor to be of the same type (strings, b64 objects "
            f"or numbers); found {type(v).__name__}")

    shape = shape_of(value)
    flat: list[bytes] = []

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                walk(x)
        else:
            flat.append(leaf(v))

    walk(value)
    arr = np.empty(len(flat), dtype=object)
    arr[:] = flat
    return arr.reshape(shape)


def to_array(value: Any, what: str) -> np.ndarray:
    """One JSON tensor value -> numpy (numbers, bools, strings, b64 objects)."""
    if isinstance(value, dict) and not _is_b64(value):
        raise InvalidArgument(f"{what}: expected a tensor value (a list or scalar), got an object")
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # numpy refuses ragged nested lists
        raise InvalidArgument(
            f"{what}: Expecting tensor elements of the same shape (the list is ragged)") from exc
    if arr.dtype.kind in "biuf":
        if arr.dtype.kind == "f" and arr.dtype != np.float64:
            arr = arr.astype(np.float64)
        return arr
    if arr.dtype.kind in ("U", "O"):
        try:
            return _leaves_to_object(value)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{what}: {exc.message}") from exc
    raise InvalidArgument(f"{what}: unsupported JSON value")


def parse_predict(doc: dict[str, Any], sig: Signature | None) -> tuple[dict[str, np.ndarray], bool]:
    """Request JSON -> (tensors by alias, row_format). ``sig`` resolves single-input shorthands."""
    has_inst, has_inputs = "instances" in doc, "inputs" in doc
    if has_inst == has_inputs:
        raise InvalidArgument(
            "Missing 'inputs' or 'instances' key" if not has_inst
            else "Not both 'inputs' and 'instances' keys may be set")
    single = next(iter(sig.inputs)) if sig is not None and len(sig.inputs) == 1 else None
    if has_inputs:
        value = doc["inputs"]
        if isinstance(value, dict) and not _is_b64(value):
            return {k: to_array(v, f"input {k!r}") for k, v in value.items()}, False
        if single is None:
            raise InvalidArgument("'inputs' must be an object naming each input (the model has "
                                  "several inputs)")
        return {single: to_array(value, f"input {single!r}")}, False
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise InvalidArgument("'instances' must be a list")
    if not instances:
        raise InvalidArgument("'instances' is empty")
    named = [isinstance(x, dict) and not _is_b64(x) for x in instances]
    if all(named):
        keys = set(instances[0])
        if any(set(x) != keys for x in instances):
            raise InvalidArgument("every instance must name the same inputs")
        if single is not None and keys != {single} and len(keys) == 1 and sig is not None:
            raise InvalidArgument(
                f"input tensor alias not found in signature: {next(iter(keys))} "
                f"(expects {single!r})")
        return {k: to_array([x[k] for x in instances], f"input {k!r}") for k in keys}, True
    if any(named):
        raise InvalidArgument("instances mix named objects and bare values")
    if single is None:
        raise InvalidArgument("instances must be objects naming each input (the model has "
                              "several inputs)")
    return {single: to_array(instances, f"input {single!r}")}, True


def _json_value(alias: str, arr: np.ndarray) -> JSON:
    if arr.dtype == object or arr.dtype.kind in "SU":
        want_b64 = alias.endswith("_bytes")

        def enc(b: Any) -> Any:
            if isinstance(b, str):
                return b
            if not want_b64:
                try:
                    return bytes(b).decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(bytes(b)).decode("ascii")}

        return np.vectorize(enc, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return _nonfinite_tolist(arr)
    return arr.tolist()


def _nonfinite_tolist(arr: np.ndarray) -> JSON:
    def fix(v: Any) -> Any:
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        return v

    return fix(arr.tolist())


def predict_response(outputs: Tensors, row_format: bool) -> dict[str, Any]:
    if not row_format:
        if len(outputs) == 1:
            (alias, arr), = outputs.items()
            return {"outputs": _json_value(alias, arr)}
        return {"outputs": {k: _json_value(k, v) for k, v in outputs.items()}}
    if len(outputs) == 1:
        (alias, arr), = outputs.items()
        return {"predictions": _json_value(alias, arr)}
    n = {int(v.shape[0]) for v in outputs.values() if v.ndim}
    if len(n) != 1:
        raise InvalidArgument(
            "Output tensors of the row format must all have the same batch size; "
            "use the columnar 'inputs' format")
    cols = {k: _json_value(k, v) for k, v in outputs.items()}
    return {"predictions": [{k: cols[k][i] for k in cols} for i in range(n.pop())]}


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


# ---- status and metadata ---------------------------------------------------------------


def status_response(statuses: list[VersionStatus]) -> dict[str, Any]:
    return {"model_version_status": [
        {"version": str(s.version), "state": s.state.name,
         "status": {"error_code": "OK" if s.error is None else s.error.code.name,
                    "error_message": s.note if s.error is None else s.error.message}}
        for s in statuses]}


def _tensor_info(spec: Any) -> dict[str, Any]:
    shape = spec.shape
    if shape is None:
        tshape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        tshape = {"dim": [{"size": str(d), "name": ""} for d in shape], "unknown_rank": False}
    return {"dtype": TF_DTYPE_NAMES[spec.dtype], "tensor_shape": tshape, "name": spec.name}


def signature_def_map(md: ModelMetadata) -> dict[str, Any]:
    return {"signature_def": {
        name: {"inputs": {k: _tensor_info(v) for k, v in sig.inputs.items()},
               "outputs": {k: _tensor_info(v) for k, v in sig.outputs.items()},
               "method_name": sig.method_name, "defaults": {}}
        for name, sig in md.signatures.items()}}


def metadata_response(name: str, version: int, md: ModelMetadata) -> dict[str, Any]:
    corolla: dict[str, Any] = {"platform": md.platform, "labels": list(md.labels),
                               "scores_output": md.scores_output}
    if md.preprocessing is not None:
        corolla["preprocessing"] = md.preprocessing.to_json()
    return {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": signature_def_map(md), "corolla": corolla}}


def labelled_predictions(classes: list[list[tuple[str, float]]], outputs: Tensors,
                         scores_output: str) -> list[dict[str, Any]]:
    """Corolla's classifier answer: the best label and the top-k, plus the raw scores."""
    scores = outputs[scores_output]
    return [{"label": row[0][0], "score": row[0][1],
             "top_k": [{"label": lbl, "score": s} for lbl, s in row],
             scores_output: scores[i].tolist()}
            for i, row in enumerate(classes)]
