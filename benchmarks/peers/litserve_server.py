"""LitServe: a ``LitAPI`` with its dynamic batching (``max_batch_size``, ``batch_timeout``).

As LitServe's docs show: ``decode_request`` turns the JSON into an example (here the photo is
decoded and preprocessed there), ``batch`` stacks, ``predict`` runs the batch, ``unbatch`` and
``encode_response`` answer each request. 2 inference workers on the CPU
(``workers_per_device=2``); LitServe starts as many API server processes by default.
Body: ``{"b64": "..."}`` (images) or ``{"features": [f1, f2, f3, f4]}``.
"""

from __future__ import annotations

import base64

import litserve as ls
import numpy as np
from common_onnx import BATCH_WAIT_S, MAX_BATCH, PORT, WORKERS, Model


class OnnxAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = Model()

    def decode_request(self, request: dict) -> np.ndarray:
        if self.model.is_image:
            return self.model.preprocess(base64.b64decode(request["b64"]))
        return np.asarray(request["features"], dtype=np.float32)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.run(x)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict:
        return {"probabilities": output.tolist()}


if __name__ == "__main__":
    api = OnnxAPI(max_batch_size=MAX_BATCH, batch_timeout=BATCH_WAIT_S)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=WORKERS)
    server.run(port=PORT, host="127.0.0.1", log_level="warning", generate_client_file=False)
