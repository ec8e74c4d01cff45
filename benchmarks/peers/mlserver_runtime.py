"""Seldon MLServer (V2 / Open Inference Protocol: ``POST /v2/models/<name>/infer``).

A custom inference runtime (an ``MLModel`` subclass), as MLServer's docs show, served by
``mlserver start DIR``, where the harness writes ``settings.json`` (2 parallel inference
workers, ``parallel_workers``) and ``model-settings.json`` (adaptive batching:
``max_batch_size`` 32, ``max_batch_time`` 2 ms) next to a copy of this file.
Body: ``{"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["<b64>"]}]}``
or an FP32 ``features`` tensor of shape [1, 4].
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

sys.path.insert(0, os.environ.get("BENCH_PEERS_DIR", str(Path(__file__).parent)))
from common_onnx import Model


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        self.model = Model()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inp = payload.inputs[0]
        data = inp.data.root if hasattr(inp.data, "root") else inp.data
        if self.model.is_image:
            photos = [base64.b64decode(s) for s in data]
            probs = np.asarray(self.model.predict_photos(photos), dtype=np.float32)
        else:
            probs = np.asarray(self.model.predict_rows(list(np.asarray(data).reshape(-1, 4))),
                               dtype=np.float32)
        return InferenceResponse(model_name=self.name, outputs=[ResponseOutput(
            name="probabilities", shape=list(probs.shape), datatype="FP32",
            data=probs.reshape(-1).tolist())])

