"""Calls shared by the frontends, over :class:`PredictionService`'s public API.

- KServe V2 helpers (REST and gRPC): a model and version from V2's strings, readiness,
  available versions, metadata, Triton's repository index, and one inference call that returns
  what the codecs encode (with Triton's classification extension applied to outputs that ask
  for it).
- TF Serving's Classify and Regress on SavedModel signatures that parse serialized tf.Examples
  (REST v1 and gRPC): :func:`run_examples`.

Everything here runs on the event loop and only awaits the service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from corolla.errors import InvalidArgument, NotFound
from corolla.model_dir import Signature
from corolla.protocols import tf_inference
from corolla.protocols.kserve_v2 import InferRequest, classification_count, model_config
from corolla.protocols.kserve_v2_tensors import classification
from corolla.repository.policy import State
from corolla.service import ModelSpec, PredictionService
from corolla.versions import v2_version

# ---- KServe V2 ----------------------------------------------------------------------------


def v2_spec(name: str, version: str | None) -> ModelSpec:
    """V2 versions are strings; empty means the latest (corolla.versions)."""
    return ModelSpec(name=name, version=v2_version(version or ""))


def available_versions(service: PredictionService, name: str) -> list[int]:
    return service.manager.available_versions(name)


def model_ready(service: PredictionService, name: str, version: str | None) -> bool:
    if not version:
        return service.model_ready(name)
    if service.draining:
        return False
    try:
        service.metadata(v2_spec(name, version))
    except (NotFound, InvalidArgument):
        return False
    return True


# Triton's repository index states for the manager's version states.
INDEX_STATES = {State.START: "LOADING", State.LOADING: "LOADING", State.AVAILABLE: "READY",
                State.UNLOADING: "UNLOADING", State.END: "UNAVAILABLE"}


def repository_index(service: PredictionService, *, ready_only: bool = False,
                     allows: Callable[[str], bool] = lambda name: True
                     ) -> list[dict[str, str]]:
    """Triton's model repository index: one entry per model version the server knows, newest
    first, and one without a version for a model that has none (yet); only the models that
    ``allows`` (an API key's models), only READY entries when ``ready_only``."""
    manager = service.manager
    out: list[dict[str, str]] = []
    for name in sorted(manager.model_names()):
        if not allows(name):
            continue
        statuses = manager.statuses(name)
        if not statuses and not ready_only:
            out.append({"name": name, "state": "UNAVAILABLE",
                         "reason": manager.source_error(name) or "no version found yet"})
        for s in statuses:
            state = INDEX_STATES.get(s.state, "UNAVAILABLE")
            if ready_only and state != "READY":
                continue
            reason = s.error.message if s.error is not None else (
                "unloaded" if s.state == State.END else s.note)
            out.append({"name": name, "version": str(s.version), "state": state,
                        "reason": reason})
    return out


@dataclass(frozen=True, kw_only=True)
class V2Model:
    name: str
    version: int
    versions: list[int]
    platform: str
    signature: Signature


def v2_model(service: PredictionService, name: str, version: str | None) -> V2Model:
    spec = v2_spec(name, version)
    found, metadata = service.metadata(spec)
    versions = available_versions(service, name) or [found]
    return V2Model(name=name, version=found, versions=versions, platform=metadata.platform,
                   signature=metadata.default_signature)


def v2_model_config(service: PredictionService, name: str, version: str | None
                    ) -> dict[str, Any]:
    """Triton's model configuration extension: the version's ModelConfig as JSON."""
    spec = v2_spec(name, version)
    _, metadata = service.metadata(spec)
    return model_config(name, metadata.platform, metadata.default_signature,
                        metadata.preprocessing, service.max_batch_size(spec))


@dataclass(frozen=True, kw_only=True)
class V2Result:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    order: tuple[str, ...]  # requested outputs, or all in the signature's order


async def v2_infer(service: PredictionService, name: str, version: str | None,
                   request: InferRequest, *, deadline: float | None = None) -> V2Result:
    spec = v2_spec(name, version)
    wanted = request.output_names
    if len(set(wanted)) != len(wanted):
        raise InvalidArgument("an output is requested twice")
    counts = {o.name: classification_count(o) for o in request.outputs}
    result = await service.predict(spec, request.inputs, output_filter=wanted,
                                   deadline=deadline, image_rows=True)
    order = wanted or tuple(a for a in result.metadata.default_signature.outputs
                            if a in result.outputs) or tuple(result.outputs)
    outputs = dict(result.outputs)
    md = result.metadata
    for name, k in counts.items():
        if k:
            labels = md.labels if name == md.scores_output else ()
            outputs[name] = classification(outputs[name], labels, k)
    return V2Result(model_name=result.name, model_version=str(result.version),
                    outputs=outputs, order=order)


# ---- TF Serving's Classify/Regress on serialized tf.Examples ---------------------------------


@dataclass(frozen=True, kw_only=True)
class ExampleResult:
    name: str
    version: int
    signature_name: str
    classifications: list[list[tuple[str, float]]] | None = None
    regressions: list[float] | None = None


async def run_examples(service: PredictionService, spec: ModelSpec, serialized: np.ndarray,
                       method_name: str, *, deadline: float | None = None) -> ExampleResult:
    """Classify or regress serialized examples (corolla.protocols.tf_inference), for the REST
    and gRPC frontends: an ordinary predict on the signature's ``inputs`` (batched, timed,
    counted like any request)."""
    _, metadata = service.metadata(spec)
    esig = tf_inference.example_signature(metadata.signatures, spec.signature_name, method_name)
    result = await service.predict(spec, {esig.input: serialized}, output_filter=esig.outputs,
                                   deadline=deadline)
    n = len(serialized)
    if esig.is_classify:
        return ExampleResult(name=result.name, version=result.version, signature_name=esig.name,
                             classifications=tf_inference.classifications(
                                 esig, result.outputs, n))
    return ExampleResult(name=result.name, version=result.version, signature_name=esig.name,
                         regressions=tf_inference.regressions(esig, result.outputs, n))
