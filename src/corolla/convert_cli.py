"""``corolla convert``: a TensorFlow SavedModel version -> an ONNX version, deliberately.

Serving a SavedModel needs nothing of this (the ``tensorflow`` runtime serves it as it is);
converting moves a model to ONNX Runtime, which is lighter and faster, once its owner chooses to.
One signature (``serving_default`` unless ``--signature``) becomes the ONNX version's
``serving_default``; the graph is converted by tf2onnx, then checked: ONNX Runtime must load it
and, for numeric inputs, give the SavedModel's own outputs on a test batch. The report says what
was converted, how closely it matches, and everything that was not carried over (other
signatures, unsupported ops, warmup requests, ...). Nothing is published unless conversion and
check pass (``--force`` publishes a graph that loads but differs). The version is written with
:func:`corolla.model_publish.stage_version`, so a server polling the output base path sees it whole.

Needs ``corolla[tensorflow]`` (TensorFlow and tf2onnx); both are imported only when it runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corolla.errors import CorollaError, FailedPrecondition, InvalidArgument
from corolla.model_dir import (
    METADATA_FILE,
    ONNX_FILE,
    ModelMetadata,
    Signature,
    TensorSpec,
    read_metadata,
    write_metadata,
)
from corolla.model_publish import stage_version

DEFAULT_OPSET = 17
RTOL, ATOL = 1e-3, 1e-4


@dataclass(kw_only=True)
class ConvertReport:
    source: Path
    signature: str
    converted: Signature | None = None
    published: Path | None = None
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    verified: bool = False
    not_converted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.published is not None

    def lines(self) -> list[str]:
        out = [f"source: {self.source} (signature {self.signature!r})"]
        if self.converted is not None:
            for kind, specs in (("input", self.converted.inputs),
                                ("output", self.converted.outputs)):
                for alias, s in specs.items():
                    shape = "?" if s.shape is None else list(s.shape)
                    out.append(f"  {kind} {alias}: {s.dtype} {shape}")
        for alias, d in self.max_abs_diff.items():
            out.append(f"  check: output {alias}: max |onnx - tensorflow| = {d:.3g}")
        out.extend(f"  note: {n}" for n in self.notes)
        if self.not_converted:
            out.append("not converted:")
            out.extend(f"  - {n}" for n in self.not_converted)
        if self.error:
            out.append(f"FAILED: {self.error}")
        elif self.published is not None:
            out.append(f"wrote {self.published} ({ONNX_FILE}, {METADATA_FILE})")
        return out


class _Capture(logging.Handler):
    """tf2onnx reports unsupported ops in its log, not in exceptions: collect them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _sample_inputs(sig: Signature, batch: int = 2) -> dict[str, np.ndarray] | None:
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for alias, s in sig.inputs.items():
        if s.shape is None or s.dtype == "string":
            return None
        shape = tuple(batch if (i == 0 and d < 0) else (4 if d < 0 else d)
                      for i, d in enumerate(s.shape))
        if s.dtype.startswith("float"):
            out[alias] = rng.uniform(0, 255, shape).astype(s.dtype)
        elif s.dtype == "bool":
            out[alias] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[alias] = rng.integers(0, 10, shape).astype(s.dtype)
    return out


def convert_saved_model(source: Path, output_base: Path, *, signature: str = "serving_default",
                        tags: tuple[str, ...] = ("serve",), opset: int = DEFAULT_OPSET,
                        version: int | None = None, force: bool = False) -> ConvertReport:
    """Convert one signature of the SavedModel in ``source`` into a new version of
    ``output_base``; the report says what happened (``report.ok``)."""
    report = ConvertReport(source=source, signature=signature)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from corolla.runtimes import tensorflow as tfrt

    if not tfrt.is_saved_model(source):
        raise InvalidArgument(f"{source} holds no SavedModel (saved_model.pb)")
    try:
        import tensorflow as tf
        from tf2onnx import convert as t2o_convert
        from tf2onnx import tf_loader
        from tf2onnx.version import version as t2o_version
    except ImportError as exc:
        raise FailedPrecondition(
            f"corolla convert needs TensorFlow and tf2onnx: pip install 'corolla[tensorflow]' "
            f"({exc})") from exc

    mg = tfrt.select_meta_graph(tfrt.read_saved_model(source), tags, source)
    signatures, skipped = tfrt.signatures_from_meta_graph(mg)
    extra_dir = source / "assets.extra"
    del mg
    for name, why in skipped.items():
        report.not_converted.append(f"signature {name!r}: {why}")
    sig = signatures.get(signature)
    if sig is None:
        report.error = (f"the SavedModel has no signature {signature!r} "
                        f"(it has {sorted(signatures)}); choose one with --signature")
        return report
    for name in sorted(signatures):
        if name != signature:
            report.not_converted.append(
                f"signature {name!r} ({signatures[name].method_name}): an ONNX version has one "
                f"signature; convert it into another base path with --signature {name}")
    if sig.method_name != "tensorflow/serving/predict":
        report.notes.append(
            f"{signature!r} is a {sig.method_name} signature; the ONNX version serves it as "
            "predict (the REST/gRPC :classify and :regress APIs need the tensorflow runtime)")
    if (extra_dir / "tf_serving_warmup_requests").exists():
        report.not_converted.append(
            "assets.extra/tf_serving_warmup_requests: ONNX versions are not warmed up")

    capture = _Capture()
    t2o_log = logging.getLogger("tf2onnx")
    t2o_log.addHandler(capture)
    propagate, t2o_log.propagate = t2o_log.propagate, False  # reported below, not logged twice
    try:
        graph_def, in_names, out_names, tables, renames = tf_loader.from_saved_model(
            str(source), None, None, list(tags), [signature], None, False,
            return_initialized_tables=True, return_tensors_to_rename=True)
        model_proto, _ = t2o_convert._convert_common(
            graph_def, name=str(source), opset=opset, input_names=in_names,
            output_names=out_names, tensors_to_rename=renames, initialized_tables=tables)
    except Exception as exc:
        report.not_converted.extend(m for m in capture.messages if "is not supported" in m)
        report.error = f"tf2onnx could not convert the graph: {exc}"
        return report
    finally:
        t2o_log.removeHandler(capture)
        t2o_log.propagate = propagate
    # "Tensorflow op [node: Op] is not supported": tf2onnx leaves such nodes in the graph.
    unsupported = [m for m in capture.messages if "is not supported" in m]
    if unsupported:
        report.not_converted.extend(unsupported)
        report.error = "the graph uses TensorFlow ops that ONNX cannot express (listed above)"
        return report

    onnx_sig = _onnx_signature(sig, model_proto)
    report.converted = onnx_sig
    data = model_proto.SerializeToString()
    check = _verify(report, source, tags, signature, sig, data, onnx_sig)
    if check is not None and not force:
        report.error = check
        return report
    if check is not None:
        report.notes.append(f"published despite: {check} (--force)")

    labels: tuple[str, ...] = ()
    scores_output: str | None = None
    probs, pre = True, None
    if (source / METADATA_FILE).exists():
        src_md = read_metadata(source)
        if signature == "serving_default":
            labels, scores_output = src_md.labels, src_md.scores_output
            probs, pre = src_md.scores_are_probabilities, src_md.preprocessing
    md = ModelMetadata(
        platform="onnx", graph=ONNX_FILE, signatures={"serving_default": onnx_sig},
        labels=labels, scores_output=scores_output, scores_are_probabilities=probs,
        preprocessing=pre,
        provenance={"converted_from": str(source.resolve()), "source_signature": signature,
                    "saved_model_tags": list(tags), "tf2onnx": t2o_version, "opset": opset,
                    "tensorflow": tf.__version__})
    with stage_version(output_base, version) as staged:
        (staged.path / ONNX_FILE).write_bytes(data)
        write_metadata(staged.path, md)
    report.published = staged.published
    return report


def _onnx_signature(sig: Signature, model_proto: Any) -> Signature:
    """The SavedModel signature with its tensors renamed to the ONNX graph's (the aliases)."""
    graph_inputs = {i.name for i in model_proto.graph.input}
    graph_outputs = {o.name for o in model_proto.graph.output}
    for alias in sig.inputs:
        if alias not in graph_inputs:
            raise FailedPrecondition(f"the ONNX graph has no input {alias!r} ({graph_inputs})")
    for alias in sig.outputs:
        if alias not in graph_outputs:
            raise FailedPrecondition(f"the ONNX graph has no output {alias!r} ({graph_outputs})")
    return Signature(
        inputs={a: TensorSpec(name=a, dtype=s.dtype, shape=s.shape) for a, s in sig.inputs.items()},
        outputs={a: TensorSpec(name=a, dtype=s.dtype, shape=s.shape)
                 for a, s in sig.outputs.items()})


def _verify(report: ConvertReport, source: Path, tags: tuple[str, ...], signature: str,
            sig: Signature, data: bytes, onnx_sig: Signature) -> str | None:
    """Load the ONNX graph and compare it with the SavedModel; an error message or None."""
    import onnxruntime as ort
    import tensorflow as tf

    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return f"ONNX Runtime cannot load the converted graph: {exc}"
    sample = _sample_inputs(sig)
    if sample is None:
        report.notes.append("outputs not compared (string or unknown-rank inputs)")
        return None
    loaded = tf.saved_model.load(str(source), tags=list(tags))
    expected = loaded.signatures[signature](**{a: tf.constant(v) for a, v in sample.items()})
    got = session.run(list(onnx_sig.outputs), sample)
    problems = []
    for alias, value in zip(onnx_sig.outputs, got, strict=True):
        want = expected[alias].numpy()
        if want.shape != value.shape:
            problems.append(f"{alias}: shape {value.shape} instead of {want.shape}")
            continue
        if want.dtype == object:
            if not np.array_equal(want, value):
                problems.append(f"{alias}: different strings")
            continue
        diff = float(np.max(np.abs(want.astype(np.float64) - value.astype(np.float64)))
                     ) if want.size else 0.0
        report.max_abs_diff[alias] = diff
        if not np.allclose(value, want, rtol=RTOL, atol=ATOL):
            problems.append(f"{alias}: max difference {diff:.3g} exceeds rtol={RTOL}, "
                            f"atol={ATOL}")
    report.verified = not problems
    return "the ONNX graph's outputs differ: " + "; ".join(problems) if problems else None


def cmd_convert(args: argparse.Namespace) -> int:
    tags = tuple(t.strip() for t in args.tags.split(",") if t.strip())
    try:
        report = convert_saved_model(
            Path(args.saved_model_dir), Path(args.output), signature=args.signature,
            tags=tags, opset=args.opset, version=args.version, force=args.force)
    except CorollaError as exc:
        print(f"corolla convert: error: {exc.message}", file=sys.stderr)
        return 2
    stream = sys.stdout if report.ok else sys.stderr
    for line in report.lines():
        print(line, file=stream)
    return 0 if report.ok else 1


DESCRIPTION = (
    "Convert a TensorFlow SavedModel version into an ONNX version, checked. A SavedModel is "
    "served as it is (with the tensorflow extra); converting moves it to ONNX Runtime, which "
    "loads faster and needs far less memory. One signature (serving_default unless "
    "--signature) is converted with tf2onnx, then ONNX Runtime must load it and, for numeric "
    "inputs, reproduce the SavedModel's outputs on a test batch. The report lists what was "
    "converted, how closely it matches, and what was not carried over (other signatures, "
    "unsupported ops, warmup requests). Nothing is published unless both steps pass (--force "
    "publishes a graph that loads but differs); the new version appears whole, so a server "
    "watching BASE_PATH picks it up safely. Needs: pip install 'corolla[tensorflow]'.")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a TensorFlow SavedModel version into an ONNX version",
        description=DESCRIPTION)
    p.add_argument("saved_model_dir", metavar="SAVEDMODEL_VERSION_DIR",
                   help="a version directory holding saved_model.pb (e.g. models/flowers/1)")
    p.add_argument("--output", required=True, metavar="BASE_PATH",
                   help="base path to write the ONNX version into (may be the same base path)")
    p.add_argument("--version", type=int, default=None,
                   help="version number to write (default: one above the highest in BASE_PATH)")
    p.add_argument("--signature", default="serving_default",
                   help="the SavedModel signature to convert (default serving_default)")
    p.add_argument("--tags", "--saved_model_tags", dest="tags", default="serve",
                   help="MetaGraph tags, comma-separated (default serve)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--force", action="store_true",
                   help="publish even when the ONNX outputs differ from TensorFlow's")
    p.set_defaults(func=cmd_convert)
