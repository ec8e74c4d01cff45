"""TensorFlow SavedModel backend. TensorFlow is imported only here, inside ``load()``.

A version directory holds a SavedModel exactly as TensorFlow writes it (``saved_model.pb`` or
``saved_model.pbtxt``, ``variables/``, ``assets/``, optionally ``assets.extra/``), e.g. from
``tf.saved_model.save(model, path)`` or Keras' ``model.export(path)``; nothing is re-exported.

- Signatures are the SavedModel's ``signature_def`` map of the MetaGraph whose tags equal
  ``--saved_model_tags`` (default ``serve``), as TF Serving reports them: aliases, TF tensor
  names (``serving_default_x:0``), dtypes, shapes with -1 for unknown sizes, method names.
  ``__saved_model_init_op`` is not a servable signature and is left out.
- The graph runs through ``tf.saved_model.load``'s signature functions. Unlike a TF1 session
  over the raw graph (what TF Serving does), that binds each function's captured variables
  through the SavedModel's object graph, so Keras 3 models saved with ``tf.saved_model.save``
  serve too (TF Serving fails on them with "Could not find variable ...").
- A ``corolla.json`` beside the SavedModel may add labels, scores output and image
  preprocessing; the signatures always come from the SavedModel.
- ``assets.extra/tf_serving_warmup_requests`` is replayed before the version is returned
  (so before it is AVAILABLE); see :mod:`corolla.runtimes.tf_warmup`.

Concurrency: ``predict`` is called from several worker threads at once; TensorFlow's functions
are thread-safe and release the GIL while they run. Thread pool sizes
(``--tensorflow_intra_op_parallelism`` / ``--tensorflow_inter_op_parallelism``) are process-wide
in TensorFlow 2 and can only be set before TensorFlow's runtime starts: the first load sets them.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from corolla.errors import Code, CorollaError, FailedPrecondition, Internal, InvalidArgument
from corolla.model_dir import METADATA_FILE, ModelMetadata, Signature, TensorSpec, read_metadata
from corolla.tensors import FROM_TF_DTYPE, Tensors, numpy_dtype

log = logging.getLogger(__name__)

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
INIT_OP_SIGNATURE = "__saved_model_init_op"
PLATFORM = "tensorflow"


@dataclass(frozen=True, kw_only=True)
class TensorflowOptions:
    intra_op_parallelism: int = 0  # 0: TensorFlow's default (one thread per core)
    inter_op_parallelism: int = 0
    saved_model_tags: tuple[str, ...] = ("serve",)
    enable_model_warmup: bool = True
    warmup_iterations: int = 1  # --num_request_iterations_for_warmup


def is_saved_model(path: Path) -> bool:
    return (path / SAVED_MODEL_PB).is_file() or (path / SAVED_MODEL_PBTXT).is_file()


def read_saved_model(path: Path) -> Any:
    """The ``tensorflow.SavedModel`` proto of a version directory (TensorFlow's own class)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        if (path / SAVED_MODEL_PB).is_file():
            sm.ParseFromString((path / SAVED_MODEL_PB).read_bytes())
        else:
            text_format.Parse((path / SAVED_MODEL_PBTXT).read_text(encoding="utf-8"), sm)
    except Exception as exc:  # DecodeError, ParseError, OSError
        raise FailedPrecondition(f"could not read the SavedModel in {path}: {exc}") from exc
    return sm


def select_meta_graph(sm: Any, tags: tuple[str, ...], path: Path) -> Any:
    """The MetaGraph whose tag set equals ``tags`` (TF Serving's rule)."""
    wanted = set(tags)
    available = []
    for mg in sm.meta_graphs:
        have = set(mg.meta_info_def.tags)
        if have == wanted:
            return mg
        available.append(",".join(sorted(have)))
    raise FailedPrecondition(
        f"MetaGraphDef associated with tags {','.join(sorted(wanted))!r} could not be found in "
        f"the SavedModel at {path} (available tag sets: {available}); set --saved_model_tags")


def _tensor_spec(alias: str, info: Any) -> TensorSpec:
    dtype = FROM_TF_DTYPE.get(int(info.dtype))
    if dtype is None:
        raise ValueError(f"tensor {alias!r} has a dtype Corolla cannot serve ({info.dtype})")
    if info.WhichOneof("encoding") != "name":
        raise ValueError(f"tensor {alias!r} is a composite tensor (sparse or ragged)")
    shape_proto = info.tensor_shape
    shape = None if shape_proto.unknown_rank else tuple(int(d.size) for d in shape_proto.dim)
    if shape is not None:
        shape = tuple(-1 if d < 0 else d for d in shape)
    return TensorSpec(name=info.name, dtype=dtype, shape=shape)


def signatures_from_meta_graph(mg: Any) -> tuple[dict[str, Signature], dict[str, str]]:
    """Signatures Corolla can serve, and why each other one is left out."""
    out: dict[str, Signature] = {}
    skipped: dict[str, str] = {}
    for name in sorted(mg.signature_def):
        if name == INIT_OP_SIGNATURE:
            continue
        sd = mg.signature_def[name]
        try:
            out[name] = Signature(
                inputs={a: _tensor_spec(a, sd.inputs[a]) for a in sorted(sd.inputs)},
                outputs={a: _tensor_spec(a, sd.outputs[a]) for a in sorted(sd.outputs)},
                method_name=sd.method_name or "tensorflow/serving/predict",
            )
        except ValueError as exc:
            skipped[name] = str(exc)
    return out, skipped


def merge_corolla_metadata(path: Path, signatures: dict[str, Signature]) -> ModelMetadata:
    """Signatures from the SavedModel; labels and preprocessing from ``corolla.json`` if any."""
    md = ModelMetadata(platform=PLATFORM, graph=SAVED_MODEL_PB, signatures=signatures)
    if not (path / METADATA_FILE).exists():
        return md
    try:
        extra = read_metadata(path)
    except CorollaError as exc:
        raise FailedPrecondition(f"{path / METADATA_FILE}: {exc.message}") from exc
    md = replace(md, labels=extra.labels, scores_output=extra.scores_output,
                 scores_are_probabilities=extra.scores_are_probabilities,
                 preprocessing=extra.preprocessing, provenance=extra.provenance)
    if "serving_default" not in signatures and (md.labels or md.preprocessing):
        raise FailedPrecondition(
            f"{path / METADATA_FILE} declares labels or preprocessing, but the SavedModel has no "
            "serving_default signature")
    if md.labels or md.preprocessing:
        try:
            md.validate()
        except CorollaError as exc:
            raise FailedPrecondition(
                f"{path / METADATA_FILE} does not fit the SavedModel: {exc.message}") from exc
    return md


def translate_tf_error(exc: BaseException, what: str) -> CorollaError:
    """A TensorFlow exception as a CorollaError (TF's codes are the canonical codes)."""
    import tensorflow as tf

    if isinstance(exc, tf.errors.OpError):
        try:
            code = Code(int(exc.error_code))
        except ValueError:
            code = Code.INTERNAL
        message = (exc.message or str(exc)).strip()
        if code == Code.OK:
            code = Code.INTERNAL
        return CorollaError(f"{what}: {message}", code)
    if isinstance(exc, TypeError | ValueError):
        return InvalidArgument(f"{what}: {exc}")
    return Internal(f"{what}: {exc!r}")


class TensorflowServable:
    def __init__(self, path: Path, options: TensorflowOptions) -> None:
        import tensorflow as tf

        self.path = path
        sm = read_saved_model(path)
        mg = select_meta_graph(sm, options.saved_model_tags, path)
        signatures, skipped = signatures_from_meta_graph(mg)
        del sm, mg  # the graph can be large; keep only the signatures
        for name, why in skipped.items():
            log.warning("%s: signature %r is not served: %s", path, name, why)
        try:
            self._loaded = tf.saved_model.load(str(path), tags=list(options.saved_model_tags))
        except Exception as exc:
            raise FailedPrecondition(
                f"could not load the SavedModel in {path}: "
                f"{translate_tf_error(exc, 'load').message}") from exc
        self._functions: dict[str, Any] = {}
        for name in list(signatures):
            fn = self._loaded.signatures.get(name)
            if fn is None:
                log.warning("%s: signature %r has no function after loading; not served",
                            path, name)
                del signatures[name]
                continue
            self._functions[name] = fn
        if not signatures:
            raise FailedPrecondition(f"the SavedModel in {path} has no servable signature")
        self.metadata = merge_corolla_metadata(path, signatures)
        self._tf_dtypes = {
            name: {a: tf.as_dtype(numpy_dtype(s.dtype)) if s.dtype != "string" else tf.string
                   for a, s in sig.inputs.items()}
            for name, sig in signatures.items()}
        if options.enable_model_warmup:
            from corolla.runtimes.tf_warmup import run_warmup

            run_warmup(self, path, iterations=options.warmup_iterations)

    def predict(
        self, inputs: Tensors, *, signature: str = "serving_default",
        output_filter: tuple[str, ...] = (),
    ) -> Tensors:
        import tensorflow as tf

        fn = self._functions.get(signature)
        if fn is None:
            raise InvalidArgument(
                f"Serving signature name: \"{signature}\" not found in signature def")
        dtypes = self._tf_dtypes[signature]
        sig = self.metadata.signatures[signature]
        try:
            feed = {a: tf.convert_to_tensor(v, dtype=dtypes[a]) for a, v in inputs.items()}
            result = fn(**feed)
        except Exception as exc:
            err = translate_tf_error(exc, "inference failed")
            if err.code == Code.INVALID_ARGUMENT:
                raise InvalidArgument(
                    f"the model rejected the input: {err.message}") from exc
            raise err from exc
        aliases = output_filter or tuple(sig.outputs)
        return {a: _numpy(result[a]) for a in aliases}

    def close(self) -> None:
        self._functions = {}
        self._loaded = None
        gc.collect()  # TensorFlow's objects hold reference cycles; free the variables now


def _numpy(t: Any) -> np.ndarray:
    arr = t.numpy()
    return np.asarray(arr)


class TensorflowRuntime:
    platform = PLATFORM

    def __init__(self, options: TensorflowOptions | None = None) -> None:
        self.options = options or TensorflowOptions()
        self._lock = threading.Lock()
        self._configured = False

    def can_load(self, path: Path) -> bool:
        return is_saved_model(path)

    def _configure(self) -> None:
        """Import TensorFlow and set its process-wide thread pools, once."""
        with self._lock:
            if self._configured:
                return
            # TensorFlow's C++ INFO lines (oneDNN, CPU features) are noise in a server log.
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
            try:
                import tensorflow as tf
            except ImportError as exc:
                raise FailedPrecondition(
                    "the tensorflow runtime needs TensorFlow: pip install 'corolla[tensorflow]'"
                ) from exc
            opts = self.options
            threading_cfg = tf.config.threading
            for want, get, set_, flag in (
                (opts.intra_op_parallelism, threading_cfg.get_intra_op_parallelism_threads,
                 threading_cfg.set_intra_op_parallelism_threads,
                 "tensorflow_intra_op_parallelism"),
                (opts.inter_op_parallelism, threading_cfg.get_inter_op_parallelism_threads,
                 threading_cfg.set_inter_op_parallelism_threads,
                 "tensorflow_inter_op_parallelism"),
            ):
                if want > 0 and get() != want:
                    try:
                        set_(want)
                    except RuntimeError:
                        log.warning("--%s=%d ignored: TensorFlow's runtime had already started "
                                    "in this process", flag, want)
            self._configured = True

    def load(self, path: Path) -> TensorflowServable:
        self._configure()
        return TensorflowServable(path, self.options)
