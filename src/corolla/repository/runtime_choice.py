"""Which runtime loads a version directory: the configured platform, or the one that
recognises the directory's files."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from corolla.config import ModelConfig
from corolla.errors import FailedPrecondition
from corolla.runtimes.base import Runtime

log = logging.getLogger("corolla.manager")


def runtime_for(runtimes: Mapping[str, Runtime], config: ModelConfig, path: Path) -> Runtime:
    platform = config.platform
    named = runtimes.get(platform)
    if platform == "tensorflow" and named is not None and not named.can_load(path):
        # TF Serving configs say model_platform "tensorflow" on every model. A version that
        # `corolla convert` (or an export) turned into ONNX keeps that config: it is served
        # by the runtime that recognises it, as an unnamed platform would be.
        platform = ""
    if platform:
        runtime = runtimes.get(platform)
        if runtime is None:
            raise FailedPrecondition(
                f"model_platform {platform!r} is not available in this server "
                f"(installed: {sorted(runtimes)})")
        return runtime
    for runtime in runtimes.values():
        if runtime.can_load(path):
            if config.platform:
                log.info("model %s: %s holds no SavedModel; model_platform %r "
                         "notwithstanding, it is served by the %s runtime",
                         config.name, path, config.platform, runtime.platform)
            return runtime
    raise FailedPrecondition(
        f"no runtime recognises {path}: expected model.onnx (+ corolla.json) "
        "or a TensorFlow SavedModel (saved_model.pb)")
