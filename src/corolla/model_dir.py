"""The model version directory: the one contract between training and serving.

Layout::

    <base_path>/<version>/        version: a positive integer (non-numeric names are ignored)
        corolla.json              metadata: signature, labels, preprocessing, provenance
        model.onnx                the graph (or saved_model.pb + variables/ for TensorFlow)
        model.int8.onnx           optionally, more graph variants of the same model
        ...                       anything else the writer keeps (reports, plots)

Graph variants. A version may hold the same model as several graphs (``graph_variants``:
variant name -> file, e.g. ``{"fp32": "model.onnx", "int8": "model.int8.onnx"}``), with the
same signature, labels and preprocessing. ``graph`` names the one served by default; a server
flag picks another by name (:meth:`ModelMetadata.graph_file`). Metadata without
``graph_variants`` (written before it existed) has one graph, ``graph``.

A version is published atomically: written under a hidden non-numeric name in the same base
path, flushed, then renamed to its number. Readers therefore see a version whole or not at all.

This module owns the metadata schema (``corolla.json``, ``format: corolla.model/v1``), its
validation, reading and writing it. :mod:`corolla.model_publish` owns the writer side
(``stage_version`` / ``publish_version``) and the file manifest's hashing (``seal_version``,
``verify_files``). Neither imports a framework: the server reads versions to serve them, the
trainer writes them, and neither imports the other.

The file manifest: ``corolla.json``'s ``files`` maps the relative path of every other file of
the version to its size and SHA-256 (:class:`FileDigest`); every Corolla publisher seals its
versions with it. An older ``corolla.json`` without ``files`` still loads from local disk.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corolla.errors import FailedPrecondition, InvalidArgument
from corolla.versions import parse_version

METADATA_FILE = "corolla.json"
ONNX_FILE = "model.onnx"
FORMAT = "corolla.model/v1"
_VARIANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Asks for the version's default graph (``graph``) rather than a named variant.
AUTO_VARIANT = "auto"

DTYPES = (
    "float32", "float64", "float16", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool", "string",
)  # fmt: skip

RESIZE_MODES = ("squash", "center_crop", "pad")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """One named tensor of a signature. ``-1`` in ``shape`` is an unknown dimension."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None  # None: unknown rank

    @property
    def batched(self) -> bool:
        """Whether the first dimension is a variable batch dimension (rows are independent)."""
        return self.shape is not None and len(self.shape) > 0 and self.shape[0] == -1

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape)}  # fmt: skip

    @classmethod
    def from_json(cls, alias: str, d: Mapping[str, Any]) -> TensorSpec:
        dtype = str(d.get("dtype", ""))
        if dtype not in DTYPES:
            raise InvalidArgument(f"tensor {alias!r}: unsupported dtype {dtype!r}")
        shape = d.get("shape")
        return cls(name=str(d.get("name", alias)), dtype=dtype,
                   shape=None if shape is None else tuple(int(x) for x in shape))  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Signature:
    """A TF Serving-style signature: aliases to tensors, plus its method name."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str = "tensorflow/serving/predict"

    def to_json(self) -> dict[str, Any]:
        return {
            "method_name": self.method_name,
            "inputs": {k: v.to_json() for k, v in self.inputs.items()},
            "outputs": {k: v.to_json() for k, v in self.outputs.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Signature:
        return cls(
            method_name=str(d.get("method_name", "tensorflow/serving/predict")),
            inputs={k: TensorSpec.from_json(k, v) for k, v in dict(d["inputs"]).items()},
            outputs={k: TensorSpec.from_json(k, v) for k, v in dict(d["outputs"]).items()},
        )


@dataclass(frozen=True, kw_only=True)
class ImagePreprocessing:
    """How raw images become the model's input tensor, exactly as the trainer did it.

    Pixels are decoded to ``channel_order`` uint8, resized per ``resize``:

    - ``squash``: resize to (height, width) ignoring aspect ratio;
    - ``center_crop``: resize the shorter side to ``size / crop_fraction`` then centre-crop;
    - ``pad``: fit inside and pad with zeros.

    then converted to float as ``(pixel * scale - mean) / std`` per channel and laid out as
    ``layout`` (NHWC or NCHW) for the signature input ``input``.
    """

    input: str
    height: int
    width: int
    channels: int = 3
    resize: str = "squash"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NHWC"
    channel_order: str = "RGB"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        problems = []
        if self.height <= 0 or self.width <= 0:
            problems.append("height and width must be positive")
        if self.channels not in (1, 3):
            problems.append("channels must be 1 or 3")
        if self.resize not in RESIZE_MODES:
            problems.append(f"resize must be one of {RESIZE_MODES}")
        if not 0.0 < self.crop_fraction <= 1.0:
            problems.append("crop_fraction must be in (0, 1]")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation must be one of {INTERPOLATIONS}")
        if self.layout not in ("NHWC", "NCHW"):
            problems.append("layout must be NHWC or NCHW")
        if self.channel_order not in ("RGB", "BGR"):
            problems.append("channel_order must be RGB or BGR")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            problems.append("mean and std need one value per channel")
        if any(s == 0 for s in self.std):
            problems.append("std must be non-zero")
        if self.dtype not in ("float32", "float16", "uint8"):
            problems.append("dtype must be float32, float16 or uint8")
        if problems:
            raise InvalidArgument("image preprocessing: " + "; ".join(problems))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed example (no batch dimension)."""
        if self.layout == "NHWC":
            return (self.height, self.width, self.channels)
        return (self.channels, self.height, self.width)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ImagePreprocessing:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise InvalidArgument(f"image preprocessing: unknown keys {sorted(unknown)}")
        kw = dict(d)
        for key in ("mean", "std"):
            if key in kw:
                kw[key] = tuple(float(x) for x in kw[key])
        return cls(**kw)


@dataclass(frozen=True, kw_only=True)
class FileDigest:
    """One file of a version, as the manifest promises it."""

    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


def files_from_json(raw: Any) -> dict[str, FileDigest]:
    """The ``files`` manifest of a corolla.json document (empty when it has none)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"{METADATA_FILE}: 'files' must be an object")
    out: dict[str, FileDigest] = {}
    for name, entry in raw.items():
        check_relative_name(str(name))
        try:
            size, digest = int(entry["size"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"{METADATA_FILE}: files[{name!r}] is malformed") from exc
        if size < 0 or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise InvalidArgument(f"{METADATA_FILE}: files[{name!r}] is malformed")
        out[str(name)] = FileDigest(size=size, sha256=digest)
    return out


def check_relative_name(name: str) -> str:
    """A manifest path: relative, '/'-separated, no '..', never corolla.json itself."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\0" in name
            or any(p in ("", ".", "..") for p in parts) or name == METADATA_FILE):
        raise InvalidArgument(f"{METADATA_FILE}: bad file name {name!r} in the manifest")
    return name


@dataclass(frozen=True, kw_only=True)
class ModelMetadata:
    """Everything the server needs to serve a version, and nothing it must guess."""

    signatures: dict[str, Signature]
    platform: str = "onnx"
    graph: str = ONNX_FILE  # the graph served by default
    # Variant name -> graph file, every one the same model (module docstring); empty: one graph.
    graph_variants: dict[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    # Which output holds class scores and whether they are already probabilities.
    scores_output: str | None = None
    scores_are_probabilities: bool = True
    preprocessing: ImagePreprocessing | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    # Every other file of the version with its size and SHA-256 (empty: an unsealed version).
    files: dict[str, FileDigest] = field(default_factory=dict)

    @property
    def default_signature(self) -> Signature:
        return self.signatures["serving_default"]

    @property
    def default_variant(self) -> str | None:
        """The name of the variant that ``graph`` is, if the version names its variants."""
        return next((k for k, v in self.graph_variants.items() if v == self.graph), None)

    def graph_file(self, variant: str = AUTO_VARIANT) -> str:
        """The graph file to serve for ``variant`` (``auto``: the default, ``graph``).

        A version that names no variants has one graph and serves it whatever is asked (there
        is nothing to choose); one that names its variants but not ``variant`` is refused.
        """
        if variant == AUTO_VARIANT or not self.graph_variants:
            return self.graph
        try:
            return self.graph_variants[variant]
        except KeyError:
            raise FailedPrecondition(
                f"graph variant {variant!r} is not in this version (it has "
                f"{sorted(self.graph_variants)}; default {self.default_variant!r})") from None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "platform": self.platform, "graph": self.graph}
        if self.graph_variants:  # absent, not empty, where there is one graph (as before)
            d["graph_variants"] = dict(self.graph_variants)
        return d | {
            "signatures": {k: v.to_json() for k, v in self.signatures.items()},
            "labels": list(self.labels),
            "scores_output": self.scores_output,
            "scores_are_probabilities": self.scores_are_probabilities,
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_json(),
            "provenance": self.provenance,
            **({"files": {k: v.to_json() for k, v in sorted(self.files.items())}}
               if self.files else {}),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelMetadata:
        if d.get("format") != FORMAT:
            raise InvalidArgument(f"{METADATA_FILE}: format must be {FORMAT!r}")
        try:
            sigs = {k: Signature.from_json(v) for k, v in dict(d["signatures"]).items()}
            if "serving_default" not in sigs:
                raise InvalidArgument(f"{METADATA_FILE}: no serving_default signature")
            pre = d.get("preprocessing")
            md = cls(
                platform=str(d.get("platform", "onnx")),
                graph=str(d.get("graph", ONNX_FILE)),
                graph_variants={str(k): str(v)
                                for k, v in dict(d.get("graph_variants") or {}).items()},
                signatures=sigs,
                labels=tuple(str(x) for x in d.get("labels", ())),
                scores_output=d.get("scores_output"),
                scores_are_probabilities=bool(d.get("scores_are_probabilities", True)),
                preprocessing=None if pre is None else ImagePreprocessing.from_json(pre),
                provenance=dict(d.get("provenance") or {}),
                files=files_from_json(d.get("files")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"{METADATA_FILE}: malformed ({exc!r})") from exc
        md.validate()
        return md

    def validate(self) -> None:
        for file in (self.graph, *self.graph_variants.values()):
            _check_file_name(file)
        for name in self.graph_variants:
            if name == AUTO_VARIANT or not _VARIANT_RE.match(name):
                raise InvalidArgument(f"graph variant name {name!r}: letters, digits, '_', "
                                      f"'.', '-', not {AUTO_VARIANT!r}")
        if self.graph_variants and self.graph not in self.graph_variants.values():
            raise InvalidArgument(f"graph {self.graph!r} is not one of graph_variants "
                                  f"{self.graph_variants}")
        sig = self.default_signature
        if self.preprocessing is not None and self.preprocessing.input not in sig.inputs:
            raise InvalidArgument(
                f"preprocessing input {self.preprocessing.input!r} is not a signature input")
        if self.scores_output is not None and self.scores_output not in sig.outputs:
            raise InvalidArgument(f"scores_output {self.scores_output!r} is not a signature output")
        if self.labels and self.scores_output is None:
            raise InvalidArgument("labels given without scores_output")


def _check_file_name(file: str) -> None:
    """A graph is a file of the version: a relative path that stays inside its directory."""
    try:
        check_relative_name(file)
    except InvalidArgument:
        raise InvalidArgument(
            f"graph file {file!r} must be a relative path inside the version") from None


def is_version_name(name: str) -> bool:
    return (version := parse_version(name)) is not None and version > 0  # corolla.versions


def read_metadata(version_dir: str | os.PathLike[str]) -> ModelMetadata:
    path = Path(version_dir) / METADATA_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidArgument(f"{path}: missing metadata file") from exc
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{path}: unreadable metadata ({exc})") from exc
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{path}: metadata must be a JSON object")
    return ModelMetadata.from_json(raw)


def write_metadata(version_dir: str | os.PathLike[str], metadata: ModelMetadata) -> None:
    metadata.validate()
    path = Path(version_dir) / METADATA_FILE
    path.write_text(json.dumps(metadata.to_json(), indent=2) + "\n", encoding="utf-8")
