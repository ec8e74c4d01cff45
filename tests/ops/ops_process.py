"""Helpers for the operations tests: servers with the fake runtime, models, requests, metrics.

Servers come from the one harness (tests/support/corolla_harness.py). Here start-up is awaited
on the REST port, because these tests also start servers with TLS, API keys or models that are
meant not to be ready yet. The fake runtime is enabled, so that models with chosen load and
inference times can be written in a line (:func:`fake_model`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corolla_harness import CorollaProcess, corolla_process

from corolla.runtimes.fake import write_fake_version


def fake_model(base: Path, version: int = 1, **spec: Any) -> Path:
    """A fake-runtime version: ``outputs = x * 2 + offset``; input shape [-1, 4]."""
    spec.setdefault("labels", ["a", "b", "c", "d"])
    return write_fake_version(base, version, **spec)


@contextlib.contextmanager
def serve(args: list[str], workdir: Path, *, wait: str | None = "/healthz",
          **kw: Any) -> Iterator[CorollaProcess]:
    """A server with the fake runtime, awaited on the REST path ``wait`` (None: not at all)."""
    with corolla_process(args, workdir, wait=wait, fake_runtime=True, **kw) as server:
        yield server


def predict_body(rows: int = 1) -> dict[str, Any]:
    return {"instances": [[1.0, 2.0, 3.0, 4.0]] * rows}


def scrape(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels as written by the server)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def grpc_predict_request(name: str, rows: int = 1) -> Any:
    import numpy as np

    from corolla.protocols import tensor_proto
    from corolla.protos.gen.tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    x = np.tile(np.array([[1, 2, 3, 4]], np.float32), (rows, 1))
    tensor_proto.from_numpy(x, content=True, out=req.inputs["x"])
    return req


def prediction_stub(channel: Any) -> Any:
    from corolla.protos.gen.tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def health_status(channel: Any, service: str = "") -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)
