"""Classify and Regress on SavedModel signatures that parse serialized ``tf.Example``\\ s.

TF Serving's Classify/Regress APIs (and ``MultiInference``) serialize every example of the
request's ``Input`` and feed them, as one DT_STRING vector, to the single input ``inputs`` of a
signature whose ``method_name`` is ``tensorflow/serving/classify`` (outputs ``classes`` and/or
``scores``, each ``[batch, num_classes]``) or ``tensorflow/serving/regress`` (output
``outputs``, ``[batch]`` or ``[batch, 1]``). The graph parses the examples itself. This module
holds the pure parts of that path, with TF Serving's rules and messages: signature checks,
Input protos and REST JSON to serialized examples, and the model's outputs to results. It
imports no framework; the serialized examples run through the ordinary prediction path
(:func:`corolla.frontend.run_examples`: ``PredictionService.predict`` with the signature's
input alias), so they are batched, timed and counted like any other request.

(:mod:`corolla.protocols.tf_example` is the other path: features mapped onto the inputs of a
model that does not parse examples itself, e.g. an ONNX classifier with labels.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from corolla.errors import FailedPrecondition, InvalidArgument
from corolla.model_dir import ModelMetadata, Signature
from corolla.tensors import Tensors, decode_b64_value

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"
EXAMPLES_INPUT = "inputs"  # kClassifyInputs / kRegressInputs
CLASSES_OUTPUT = "classes"
SCORES_OUTPUT = "scores"
REGRESS_OUTPUT = "outputs"

_KIND = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
_METHOD_WORD = {CLASSIFY_METHOD: "classification", REGRESS_METHOD: "regression"}


@dataclass(frozen=True, kw_only=True)
class ExampleSignature:
    """A checked classify or regress signature: which aliases to feed and fetch."""

    name: str
    method_name: str
    input: str
    outputs: tuple[str, ...]  # classify: ("classes"?, "scores"?); regress: ("outputs",)

    @property
    def is_classify(self) -> bool:
        return self.method_name == CLASSIFY_METHOD


def wants_examples(metadata: ModelMetadata, signature_name: str, method_name: str) -> bool:
    """Whether a Classify/Regress request takes this path (serialized examples into the graph).

    Yes when the requested signature has that method name, and for every SavedModel without
    labels (whose errors must then be TF Serving's). Models with labels in their metadata
    keep Corolla's label classifier (:meth:`PredictionService.classify`).
    """
    sig = metadata.signatures.get(signature_name or "serving_default")
    if sig is not None and sig.method_name == method_name:
        return True
    return metadata.platform == "tensorflow" and not metadata.labels


def example_signature(signatures: Mapping[str, Signature], name: str, method_name: str
                      ) -> ExampleSignature:
    """Check a signature the way TF Serving's classifier/regressor do (same messages)."""
    name = name or "serving_default"
    sig = signatures.get(name)
    if sig is None:
        raise InvalidArgument(f"No signature was found with the name: {name}")
    word = _METHOD_WORD[method_name]
    if sig.method_name != method_name:
        raise InvalidArgument(
            f"Expected {word} signature method_name to be {method_name}. "
            f"Was: {sig.method_name}")
    if len(sig.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if EXAMPLES_INPUT not in sig.inputs:
        raise FailedPrecondition(f"No {word} inputs found in SignatureDef {name!r}")
    if sig.inputs[EXAMPLES_INPUT].dtype != "string":
        raise FailedPrecondition(
            f"{word} signature {name!r}: input {EXAMPLES_INPUT!r} must be DT_STRING")
    if method_name == CLASSIFY_METHOD:
        if len(sig.outputs) not in (1, 2):
            raise InvalidArgument(
                f"Expected one or two output Tensors, found {len(sig.outputs)}")
        outs = tuple(a for a in (CLASSES_OUTPUT, SCORES_OUTPUT) if a in sig.outputs)
        if not outs:
            raise FailedPrecondition(
                "Expected classification signature outputs to contain at least one of "
                f"\"{CLASSES_OUTPUT}\" or \"{SCORES_OUTPUT}\". Signature: {name}")
    else:
        if len(sig.outputs) != 1:
            raise InvalidArgument(f"Expected one output Tensor, found {len(sig.outputs)}")
        if REGRESS_OUTPUT not in sig.outputs:
            raise FailedPrecondition(
                f"No regression outputs found in SignatureDef {name!r}")
        outs = (REGRESS_OUTPUT,)
    return ExampleSignature(name=name, method_name=method_name, input=EXAMPLES_INPUT,
                            outputs=outs)


# ---- requests -> serialized examples ---------------------------------------------------------


def _object_array(items: Sequence[bytes]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = list(items)
    return arr


def serialize_input(input_msg: Any) -> np.ndarray:
    """A ``tensorflow.serving.Input`` proto -> 1-D object array of serialized Examples.

    With a context, each element is the serialized context followed by the serialized example:
    protobuf merges concatenated messages, so an example's feature overrides the context's
    feature of the same name, exactly as TF Serving's ``InputToSerializedExampleTensor``.
    """
    kind = input_msg.WhichOneof("kind")
    if kind == "example_list":
        examples, context = input_msg.example_list.examples, b""
    elif kind == "example_list_with_context":
        lst = input_msg.example_list_with_context
        examples, context = lst.examples, lst.context.SerializeToString()
    else:
        raise InvalidArgument("Input is empty.")
    if not examples:
        raise InvalidArgument("Input is empty.")
    return _object_array([context + ex.SerializeToString() for ex in examples])


def _feature_values(name: str, content: Any, feature: Any) -> None:
    values = content if isinstance(content, list) else [content]
    kind: str | None = None

    def want(k: str) -> None:
        nonlocal kind
        if kind is None:
            kind = k
        elif kind != k:
            raise InvalidArgument(
                f"Unexpected element type in feature: {name} expecting type: {_KIND[kind]}")

    for v in values:
        if isinstance(v, bool):
            want("int64_list")
            feature.int64_list.value.append(int(v))
        elif isinstance(v, int):
            if not -(1 << 63) <= v < (1 << 63):
                raise InvalidArgument(
                    f"Feature: {name} has uint64 element. Only int64 is supported.")
            want("int64_list")
            feature.int64_list.value.append(v)
        elif isinstance(v, float):
            want("float_list")
            feature.float_list.value.append(v)
        elif isinstance(v, str):
            want("bytes_list")
            feature.bytes_list.value.append(v.encode("utf-8"))
        elif isinstance(v, dict) and len(v) == 1 and "b64" in v:
            want("bytes_list")
            feature.bytes_list.value.append(decode_b64_value(v["b64"]))
        else:
            raise InvalidArgument(
                f"Feature: {name} has element with unexpected JSON type: {_json_type(v)}")


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def example_from_json(obj: Any) -> bytes:
    """One REST example object ``{"feature": value or [values]}`` -> serialized tf.Example.

    TF Serving's typing: strings and ``{"b64": ...}`` are bytes, numbers with a fraction or an
    exponent are floats, whole numbers and booleans are int64; one feature's values share a type.
    """
    from corolla.protos.gen.tensorflow.core.example import example_pb2

    if not isinstance(obj, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(obj)}")
    ex = example_pb2.Example()
    for name, content in obj.items():
        _feature_values(str(name), content, ex.features.feature[str(name)])
    return ex.SerializeToString()


def serialize_json_request(doc: Mapping[str, Any]) -> np.ndarray:
    """A REST ``:classify``/``:regress`` body -> 1-D object array of serialized Examples."""
    context = b""
    if "context" in doc:
        context = example_from_json(doc["context"])
    examples = doc.get("examples")
    if examples is None:
        raise InvalidArgument("'examples' key is expected and was not found")
    if not isinstance(examples, list):
        raise InvalidArgument("Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidArgument("'examples' value is an empty array")
    return _object_array([context + example_from_json(ex) for ex in examples])


# ---- model outputs -> results ----------------------------------------------------------------


def classifications(esig: ExampleSignature, outputs: Tensors, num_examples: int
                    ) -> list[list[tuple[str, float]]]:
    """Per example, (label, score) per class in the model's order (TF Serving does not sort)."""
    classes = outputs.get(CLASSES_OUTPUT) if CLASSES_OUTPUT in esig.outputs else None
    scores = outputs.get(SCORES_OUTPUT) if SCORES_OUTPUT in esig.outputs else None
    for what, t in (("classes", classes), ("scores", scores)):
        if t is None:
            continue
        if t.ndim != 2:
            raise InvalidArgument(
                f"Expected Tensor shape: [batch_size num_classes] but got {list(t.shape)}")
        if t.shape[0] != num_examples:
            raise InvalidArgument(
                f"Expected {what} output batch size of {num_examples}. Got: {t.shape[0]}")
    if classes is not None and classes.dtype != object:
        raise InvalidArgument(f"Expected classes Tensor of DT_STRING. Got: {classes.dtype}")
    if scores is not None and scores.dtype.kind != "f":
        raise InvalidArgument(f"Expected scores Tensor of DT_FLOAT. Got: {scores.dtype}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}")
    ref = classes if classes is not None else scores
    num_classes = 0 if ref is None else int(ref.shape[1])
    rows = []
    for i in range(num_examples):
        row = []
        for c in range(num_classes):
            label = "" if classes is None else _label(classes[i, c])
            score = 0.0 if scores is None else float(np.float32(scores[i, c]))
            row.append((label, score))
        rows.append(row)
    return rows


def _label(v: Any) -> str:
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", errors="replace")
    return str(v)


def regressions(esig: ExampleSignature, outputs: Tensors, num_examples: int) -> list[float]:
    t = outputs.get(REGRESS_OUTPUT)
    if t is None:
        raise InvalidArgument("the model returned no regression output")
    if t.dtype.kind != "f":
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT. Got: {t.dtype}")
    if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
        raise InvalidArgument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got {list(t.shape)}")
    if t.shape[0] != num_examples:
        raise InvalidArgument(
            f"Input batch size did not match output batch size: {num_examples} vs. "
            f"{t.shape[0]}")
    return [float(np.float32(x)) for x in t.reshape(-1)]


# ---- results -> TF Serving's wire formats ----------------------------------------------------


def classify_json(rows: list[list[tuple[str, float]]]) -> dict[str, Any]:
    """TF Serving's REST ``:classify`` body: ``{"result": [[[label, score], ...], ...]}``."""
    return {"result": [[[label, score] for label, score in row] for row in rows]}


def regress_json(values: list[float]) -> dict[str, Any]:
    return {"result": values}


def classification_result(rows: list[list[tuple[str, float]]], out: Any) -> Any:
    """Fill a ``tensorflow.serving.ClassificationResult`` (e.g. ``response.result``)."""
    for row in rows:
        cl = out.classifications.add()
        for label, score in row:
            c = cl.classes.add()
            c.label, c.score = label, score
    return out


def regression_result(values: list[float], out: Any) -> Any:
    """Fill a ``tensorflow.serving.RegressionResult`` (e.g. ``response.result``)."""
    for v in values:
        out.regressions.add().value = v
    return out
