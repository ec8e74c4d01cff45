"""KServe's Python ModelServer (V1 protocol: ``POST /v1/models/<name>:predict``).

Written as KServe's custom-model docs show it (a ``kserve.Model`` with ``load``/``predict``);
started with 2 uvicorn workers (``--workers``), the multi-process mode its docs recommend for
CPU-bound models. The Python ModelServer has no request batching of its own (KServe batches in
its Go agent sidecar, which needs Kubernetes), so none here. gRPC and docs are off.

Body: ``{"instances": [{"b64": "..."}]}`` (images) or ``{"instances": [[f1, f2, f3, f4]]}``.
"""

from __future__ import annotations

import base64
import sys

from common_onnx import MODEL_NAME, PORT, WORKERS, Model

sys.argv[1:] = ["--http_port", str(PORT), "--workers", str(WORKERS), "--enable_grpc", "false",
                "--enable_docs_url", "false"]

import kserve  # noqa: E402  (kserve reads its flags from sys.argv when imported)


class OnnxModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model: Model | None = None
        self.load()

    def load(self) -> bool:
        self.model = Model()
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        assert self.model is not None
        instances = payload["instances"]
        if self.model.is_image:
            photos = [base64.b64decode(inst["b64"]) for inst in instances]
            return {"predictions": self.model.predict_photos(photos)}
        return {"predictions": self.model.predict_rows(instances)}


if __name__ == "__main__":
    kserve.ModelServer().start([OnnxModel(MODEL_NAME)])
