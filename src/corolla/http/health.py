"""Operational REST endpoints: liveness, readiness, Prometheus metrics.

- ``/healthz`` (and ``/v2/health/live`` when the KServe V2 routes do not provide it): 200 while
  the process answers.
- ``/readyz`` (and ``/v2/health/ready`` likewise): 200 when every configured model has an
  AVAILABLE version and the server is not draining, else 503; the body says which models are
  not ready. ``/readyz?model=NAME`` answers for one model (404 for a model that is not
  configured).
- The metrics paths (``/metrics``; ``/monitoring/prometheus/metrics`` or the path of
  ``--monitoring_config_file``): Prometheus text format.

These handlers only read state; they never wait on models or locks.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Sequence

from starlette.requests import Request
from starlette.responses import Response

from corolla.http.routes import Route
from corolla.metrics import CONTENT_TYPE
from corolla.service import PredictionService

HEALTH_PATHS = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")


def _json(doc: object, status: int = 200) -> Response:
    return Response(json.dumps(doc), status_code=status, media_type="application/json")


def health_routes(service: PredictionService, skip: Collection[str] = ()) -> list[Route]:
    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        model = request.query_params.get("model")
        if model is not None:
            if not service.manager.has_model(model):
                return _json({"error": f"model {model} is not configured"}, 404)
            ok = service.model_ready(model)
            return _json({"model": model, "ready": ok}, 200 if ok else 503)
        ok = service.ready()
        doc: dict[str, object] = {"ready": ok}
        if not ok:
            doc["draining"] = bool(service.draining)
            doc["not_ready"] = [
                n for n in service.manager.model_names() if not service.manager.model_ready(n)
            ]
            if not service.manager.model_names():
                doc["reason"] = "no models configured"
        return _json(doc, 200 if ok else 503)

    async def v2_live(request: Request) -> Response:
        return _json({"live": True})

    async def v2_ready(request: Request) -> Response:
        ok = service.ready()
        return _json({"ready": ok}, 200 if ok else 503)

    get = frozenset({"GET", "HEAD"})
    routes = [Route(api=None, path="/healthz", methods=get, handler=live),
              Route(api=None, path="/readyz", methods=get, handler=ready)]
    if "/v2/health/live" not in skip:
        routes.append(Route(api="ServerLive", path="/v2/health/live", methods=get,
                            handler=v2_live))
    if "/v2/health/ready" not in skip:
        routes.append(Route(api="ServerReady", path="/v2/health/ready", methods=get,
                            handler=v2_ready))
    return routes


def metrics_routes(scrape: Callable[[], Awaitable[bytes]], paths: Sequence[str]
                   ) -> list[Route]:
    """``scrape``: the server's metrics text (every process's, with workers)."""

    async def metrics(request: Request) -> Response:
        return Response(await scrape(), media_type=CONTENT_TYPE)

    return [Route(api=None, path=p, methods=frozenset({"GET"}), handler=metrics)
            for p in dict.fromkeys(paths)]


def route_paths(routes: Sequence[Route]) -> set[str]:
    return {r.path for r in routes}
