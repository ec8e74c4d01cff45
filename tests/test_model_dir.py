"""corolla.json graph variants: the schema, its checks, and old files that name none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corolla.errors import FailedPrecondition, InvalidArgument
from corolla.model_dir import ModelMetadata, read_metadata

SIG = {"serving_default": {"inputs": {"x": {"name": "x", "dtype": "float32", "shape": [-1, 4]}},
                           "outputs": {"y": {"name": "y", "dtype": "float32", "shape": [-1, 3]}}}}


def _doc(**extra: Any) -> dict[str, Any]:
    return {"format": "corolla.model/v1", "signatures": SIG, **extra}


def test_metadata_without_variants_serves_its_one_graph_whatever_is_asked() -> None:
    md = ModelMetadata.from_json(_doc(graph="model.onnx"))  # as written before variants
    assert md.graph_variants == {} and md.default_variant is None
    for variant in ("auto", "fp32", "int8"):
        assert md.graph_file(variant) == "model.onnx"
    assert "graph_variants" not in md.to_json()  # and it is written back the same way


def test_variants_round_trip_and_select_by_name() -> None:
    variants = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    md = ModelMetadata.from_json(_doc(graph="model.int8.onnx", graph_variants=variants))
    assert md.default_variant == "int8"
    assert md.graph_file() == md.graph_file("auto") == md.graph_file("int8") == "model.int8.onnx"
    assert md.graph_file("fp32") == "model.onnx"
    again = ModelMetadata.from_json(json.loads(json.dumps(md.to_json())))
    assert again == md
    with pytest.raises(FailedPrecondition, match=r"'fp16' is not in this version.*fp32"):
        md.graph_file("fp16")


@pytest.mark.parametrize(("extra", "message"), [
    ({"graph": "other.onnx", "graph_variants": {"fp32": "model.onnx"}},
     "is not one of graph_variants"),
    ({"graph": "../model.onnx"}, "relative path inside the version"),
    ({"graph": "/etc/model.onnx"}, "relative path inside the version"),
    ({"graph": "model.onnx", "graph_variants": {"fp32": "model.onnx", "x": "a/../../b.onnx"}},
     "relative path inside the version"),
    ({"graph": "model.onnx", "graph_variants": {"auto": "model.onnx"}}, "graph variant name"),
    ({"graph": "model.onnx", "graph_variants": {"f p": "model.onnx"}}, "graph variant name"),
])
def test_bad_variants_are_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ModelMetadata.from_json(_doc(**extra))


def test_the_embedded_default_model_names_fp32_and_int8_and_serves_int8() -> None:
    base = Path(__file__).resolve().parents[1] / "src/corolla/default_model/flowers/1"
    md = read_metadata(base)
    assert md.default_variant == "int8"
    assert md.graph_variants == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    for file in md.graph_variants.values():
        assert (base / file).stat().st_size > 1_000_000
    assert md.provenance["quantization"]["served"] == "int8"
