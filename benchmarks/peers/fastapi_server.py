"""A plain FastAPI + uvicorn handler: what a team writes by hand.

``def`` endpoints (FastAPI runs them in its thread pool), pydantic request models, 2 uvicorn
worker processes (``--workers 2``, uvicorn's recommendation for CPU-bound apps on 2 cores), no
batching. ``POST /predict`` takes ``{"instances": [{"b64": "..."}]}`` (or feature rows);
``POST /predict_raw`` takes the photo itself as the body.
"""

from __future__ import annotations

import base64

import uvicorn
from common_onnx import PORT, WORKERS, Model
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

app = FastAPI()
_model: Model | None = None


def model() -> Model:
    global _model
    if _model is None:
        _model = Model()
    return _model


class PredictRequest(BaseModel):
    instances: list[dict[str, str] | list[float]]


@app.on_event("startup")
def _load() -> None:
    model()


@app.post("/predict")
def predict(req: PredictRequest) -> dict:
    m = model()
    if m.is_image:
        photos = [base64.b64decode(inst["b64"]) for inst in req.instances]  # type: ignore[index]
        return {"predictions": m.predict_photos(photos)}
    return {"predictions": m.predict_rows(req.instances)}  # type: ignore[arg-type]


@app.post("/predict_raw")
async def predict_raw(request: Request) -> dict:
    data = await request.body()
    return {"predictions": await run_in_threadpool(model().predict_photos, [data])}


if __name__ == "__main__":
    uvicorn.run("fastapi_server:app", host="127.0.0.1", port=PORT, workers=WORKERS,
                log_level="warning", access_log=False)
