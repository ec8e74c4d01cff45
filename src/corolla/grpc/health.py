"""``grpc.health.v1.Health`` reflecting readiness.

The overall service (``""``) and Corolla's API names are SERVING when the server is ready (not
draining, every configured model has a version AVAILABLE), NOT_SERVING otherwise; a model's name
is SERVING when that model has a version AVAILABLE; other names are NOT_FOUND (Check) or
SERVICE_UNKNOWN (Watch). Watch answers on every change: it waits on the manager's change
condition, and re-checks at least every ``watch_interval`` seconds (draining is not an event
there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corolla.service import PredictionService

Status = health_pb2.HealthCheckResponse


def _changed(current: Callable[[], int], sent: int) -> Callable[[], bool]:
    return lambda: current() != sent


class Health(health_pb2_grpc.HealthServicer):
    def __init__(self, service: PredictionService, service_names: Iterable[str] = (),
                 *, watch_interval: float = 1.0) -> None:
        self.service = service
        self.service_names = frozenset({"", *service_names})
        self.watch_interval = watch_interval

    def status(self, name: str) -> int | None:
        if name in self.service_names:
            return Status.SERVING if self.service.ready() else Status.NOT_SERVING
        if self.service.manager.has_model(name):
            return Status.SERVING if self.service.model_ready(name) else Status.NOT_SERVING
        return None

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return Status(status=status)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        def current() -> int:
            status = self.status(request.service)
            return Status.SERVICE_UNKNOWN if status is None else status

        last: int | None = None
        while True:
            status = current()
            if status != last:
                await context.write(Status(status=status))
                last = status
            with contextlib.suppress(TimeoutError):
                await self.service.manager.wait_until(_changed(current, status),
                                                      self.watch_interval)
