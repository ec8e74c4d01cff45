"""BentoML: a ``@bentoml.service`` with an adaptive-batching API (``batchable=True``).

As BentoML's docs show for CPU models: 2 workers (``workers=2`` in the service config), the API
batchable over its list argument with ``max_batch_size`` and ``max_latency_ms``.
Started by ``bentoml serve bentoml_service:OnnxService --port PORT``.
Body: ``{"instances": ["<b64>"]}`` (images) or ``{"instances": [[f1, f2, f3, f4]]}``.
"""

from __future__ import annotations

import base64

import bentoml
from common_onnx import MAX_BATCH, WORKERS, Model


@bentoml.service(workers=WORKERS, logging={"access": {"enabled": False}})
class OnnxService:
    def __init__(self) -> None:
        self.model = Model()

    @bentoml.api(route="/predict", batchable=True, max_batch_size=MAX_BATCH,
                 max_latency_ms=10_000)
    def predict(self, instances: list[str | list[float]]) -> list[list[float]]:
        if self.model.is_image:
            return self.model.predict_photos([base64.b64decode(s) for s in instances])
        return self.model.predict_rows(instances)
