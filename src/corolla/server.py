"""Wiring and lifecycle: builds every object of a running server and stops them in order.

Start: thread pools -> runtimes -> manager -> prediction service -> REST (uvicorn) and gRPC
listeners -> models load in the background (readiness tells when they are AVAILABLE).
Stop (SIGTERM/SIGINT): readiness turns false at once; after ``shutdown_grace_seconds`` the
listeners close; in-flight requests finish (bounded by ``drain_timeout_seconds``); models
unload; the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client.metrics_core import Metric
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from corolla.auth import KeyStore
from corolla.config import ModelConfig, load_model_config_file
from corolla.cpus import available_cpus
from corolla.errors import CorollaError
from corolla.http import webui
from corolla.http.app import Router, build_app
from corolla.http.coalesce import DueWrites
from corolla.http.encoding import BodyParser
from corolla.http.health import HEALTH_PATHS, health_routes, metrics_routes, route_paths
from corolla.http.kserve_v2 import KServeV2Rest
from corolla.http.limits import LimitsMiddleware, guarded_protocol
from corolla.http.observe import ObserveMiddleware
from corolla.http.openapi import OpenApi
from corolla.http.routes import Route, RouteTable
from corolla.http.tfserving import TfServingRest
from corolla.listeners import (
    ListenError,
    RestListener,
    grpc_address,
    grpc_probe_host,
    in_use,
    rest_socket,
)
from corolla.logging_setup import ModelEvents
from corolla.metrics import Metrics
from corolla.options import ServerOptions, default_cache_dir
from corolla.repository.manager import Manager
from corolla.repository.serving_map import LoadedVersion
from corolla.runner import RunHooks
from corolla.runtimes.base import Activity, Runtime
from corolla.runtimes.onnx import OnnxRuntime
from corolla.runtimes.tensorflow import TensorflowRuntime
from corolla.service import PredictionService
from corolla.warmup import warmup_hook
from corolla.workers import START_TIMEOUT, WorkerControl, WorkerLink, WorkerPool

if TYPE_CHECKING:
    import grpc

__all__ = ["CorollaServer", "ListenError", "ServerOptions", "serve", "serve_worker"]

log = logging.getLogger("corolla.server")


def _runtimes(options: ServerOptions, activity: Activity) -> list[Runtime]:
    runtimes: list[Runtime] = [OnnxRuntime(options.onnx, activity)]
    # Imports TensorFlow only when it loads a SavedModel version.
    runtimes.append(TensorflowRuntime(options.tensorflow))
    if options.enable_fake_runtime:
        from corolla.runtimes.fake import FakeRuntime

        runtimes.append(FakeRuntime())
    runtimes.extend(options.runtimes_extra)
    if options.allowed_model_roots:
        from corolla.confine import ConfinedRuntime

        runtimes = [ConfinedRuntime(r, options.allowed_model_roots) for r in runtimes]
    return runtimes


class CorollaServer:
    def __init__(self, options: ServerOptions, *, worker: WorkerLink | None = None) -> None:
        """``worker``: this process is a worker of another (corolla.workers). Settings that
        depend on the machine are decided here if the caller left them open (resolved)."""
        self.options = options = options.resolved(available_cpus())
        self.worker = worker
        self.pool: WorkerPool | None = None
        self.decode_pool = ThreadPoolExecutor(options.decode_threads, thread_name_prefix="decode")
        self.infer_pool = ThreadPoolExecutor(options.infer_threads, thread_name_prefix="infer")
        self.load_pool = ThreadPoolExecutor(options.load_threads, thread_name_prefix="load")
        activity = Activity()  # requests in flight: the runtimes' solo sessions read it
        from corolla.storage.source import StorageSources

        self.sources = StorageSources(options.model_cache_dir or default_cache_dir(),
                                      options.model_cache_max_bytes)
        self.manager = Manager(runtimes=_runtimes(options, activity), executor=self.load_pool,
                               options=options.manager, source_factory=self.sources)
        self.metrics = Metrics()
        self.prediction_cache = None
        if options.prediction_cache is not None:
            from corolla.prediction_cache import PredictionCache, cache_wrapper

            self.prediction_cache = PredictionCache(options.prediction_cache)
            self.metrics.add_source(self.prediction_cache.collect)
        self.service = PredictionService(
            self.manager,
            options=options.service_options(),
            decode_executor=self.decode_pool, infer_executor=self.infer_pool,
            activity=activity, run_hooks=self._run_hooks,
            warmup=warmup_hook(options.warmup, self.metrics),
            wrap_answer=(None if self.prediction_cache is None
                         else cache_wrapper(self.prediction_cache)))
        # Answers held for the end of a loop iteration leave before a job holds the loop.
        self.due_writes = DueWrites()
        self.service.loop_runner.before_job = self.due_writes.flush
        self.metrics.instrument(self.service)
        self.metrics.add_source(self.sources.stats.collect)
        bodies = BodyParser()  # one big body parsed at a time in this process, any API
        self._v1_rest = TfServingRest(self.service, bodies=bodies)
        self._v2_rest = KServeV2Rest(self.service, bodies=bodies)
        self.openapi = OpenApi(options.metrics_paths)  # GET /openapi.json, from the table
        events = ModelEvents()
        self.manager.on_load.append(events.on_load)
        self.manager.on_unload.append(events.on_unload)
        self.keys: KeyStore | None = None
        if options.auth_keys_file or options.auth_keys:
            self.keys = KeyStore(path=options.auth_keys_file, static=options.auth_keys)
        self.draining = False
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rest: RestListener | None = None
        self._grpc: grpc.aio.Server | None = None
        self.rest_port = options.rest_api_port
        self.grpc_port = options.grpc_port

    def _run_hooks(self, loaded: LoadedVersion) -> RunHooks:
        """A loading version's traffic observers: runtime latency, batch sizes and queueing."""
        return RunHooks(runtime=self.metrics.runtime_hook(loaded.name, loaded.platform),
                        batch=self.metrics.batch_hook(loaded.name))

    # ---- what spans this server's processes ------------------------------------------------

    async def reload_config(self, configs: Sequence[ModelConfig], timeout: float | None
                            ) -> None:
        """TF Serving's ReloadConfig for the whole server: in a worker, the main process
        carries it out; in the main process, this process and every worker apply it, and it
        returns once all have (or raises the first error)."""
        if self.worker is not None:
            await self.worker.reload_config(configs, timeout)
            return
        others = ([asyncio.ensure_future(self.pool.reload_config(configs, timeout))]
                  if self.pool is not None else [])
        try:
            await self.service.reload_config(configs, timeout=timeout)
        finally:
            results = await asyncio.gather(*others, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def reload_config_here(self, configs: Sequence[ModelConfig], timeout: float | None
                                 ) -> None:
        """ReloadConfig in this process only (the main process asks each worker)."""
        await self.service.reload_config(configs, timeout=timeout)

    async def scrape(self) -> bytes:
        """What the metrics endpoint answers: this process's metrics, or with workers every
        process's, merged by the main process."""
        if self.worker is not None:
            return await self.worker.gather_metrics()
        if self.pool is not None:
            return await self.pool.gather_metrics()
        return self.metrics.render()

    # ---- construction of the frontends ---------------------------------------------------

    def rest_routes(self) -> list[Route]:
        """Every REST route, for the one route table (corolla.http.routes)."""
        routes: list[Route] = [*self._v2_rest.routes(), *self._v1_rest.routes(),
                               self.openapi.route()]
        routes.extend(health_routes(self.service, skip=route_paths(routes)))
        routes.extend(metrics_routes(self.scrape, self.options.metrics_paths))
        if self.options.web_ui:
            routes.extend(webui.webui_routes())
        return routes

    def other_routes(self) -> list[BaseRoute]:
        """Starlette routes outside the table, for what names no model (none today): served
        by the fallback app for paths that no route in the table takes."""
        return []

    def open_paths(self) -> frozenset[str]:
        """Paths that need no API key and are not subject to the request limits."""
        paths: set[str] = set()
        if self.options.auth_open_health:
            paths.update(HEALTH_PATHS)
        if self.options.auth_open_metrics:
            paths.update(self.options.metrics_paths)
        if self.options.web_ui:
            paths.update(webui.OPEN_PATHS)  # the page holds no data; its API calls need keys
        return frozenset(paths)

    def rest_app(self) -> ASGIApp:
        """The router over the route table, wrapped (outermost first) in observe -> limits ->
        CORS -> auth; all of them read the one match that observe makes per request."""
        opts = self.options
        table = self.openapi.table = RouteTable(self.rest_routes())
        app: ASGIApp = Router(table, build_app(self.other_routes()))
        if self.keys is not None:
            from corolla.http.auth import AuthMiddleware

            app = AuthMiddleware(
                app, self.keys, table=table, open_paths=self.open_paths(),
                open_apis=frozenset({"ModelReady"}) if opts.auth_open_health else frozenset())
        if opts.rest_api_enable_cors_support or opts.cors_allowed_origins:
            from starlette.middleware.cors import CORSMiddleware

            app = CORSMiddleware(
                app, allow_origins=list(opts.cors_allowed_origins) or ["*"],
                allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"],
                expose_headers=["x-request-id"])
        exempt = [*HEALTH_PATHS, *opts.metrics_paths, *(webui.OPEN_PATHS if opts.web_ui else ())]
        app = LimitsMiddleware(app, opts.http_limits, self.metrics.inflight, frozenset(exempt),
                               memory=self.service.memory)
        return ObserveMiddleware(app, table=table, metrics=self.metrics,
                                 known_model=self.manager.has_model,
                                 draining=lambda: self.service.draining,
                                 access_log_enabled=opts.access_log)

    def _grpc_server(self) -> grpc.aio.Server | None:
        try:
            from corolla.grpc.server import build_grpc_server
        except ImportError:
            log.warning("gRPC frontend not available in this build")
            return None
        from corolla.grpc.interceptors import OpsInterceptor

        ops = OpsInterceptor(metrics=self.metrics, keys=self.keys,
                             known_model=self.manager.has_model,
                             max_concurrent_requests=self.options.http_limits
                             .max_concurrent_requests,
                             health_open=self.options.auth_open_health,
                             access_log=self.options.access_log)
        return build_grpc_server(self.service, reload_config=self.reload_config,
                                 max_message_bytes=self.options.grpc_max_message_bytes,
                                 interceptors=[ops],
                                 options=[("grpc.so_reuseport", 1 if self.shares_ports else 0),
                                          *_grpc_age(self.options)])

    @property
    def shares_ports(self) -> bool:
        """Several processes listen on the REST and gRPC ports (--rest_workers, SO_REUSEPORT);
        otherwise a second server on the same port fails to start instead of silently taking
        half the connections."""
        return self.options.rest_workers > 1 or self.worker is not None

    def _bind_grpc(self) -> None:
        """Build the gRPC server and bind its port (--grpc_host, default --host)."""
        opts = self.options
        self._grpc = server = self._grpc_server()
        if server is None:
            return
        address = grpc_address(self._grpc_host, opts.grpc_port)
        try:
            if opts.grpc_tls is not None:
                from corolla.tls import grpc_server_credentials

                self.grpc_port = server.add_secure_port(
                    address, grpc_server_credentials(opts.grpc_tls))
            else:
                self.grpc_port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio's "Failed to bind to address"
            raise ListenError(f"cannot listen on port {opts.grpc_port} (gRPC API, {address}): "
                              "the port is in use or not allowed") from exc

    # ---- lifecycle -------------------------------------------------------------------------

    def ready(self) -> bool:
        return self.service.ready()

    def _uvicorn_config(self) -> uvicorn.Config:
        opts, limits = self.options, self.options.http_limits
        tls_factory = None
        if opts.rest_tls is not None:
            from corolla.tls import rest_ssl_context

            ctx = rest_ssl_context(opts.rest_tls)
            tls_factory = lambda config, default: ctx  # noqa: E731
        return uvicorn.Config(
            self.rest_app(), lifespan="off", access_log=False, log_config=None,
            timeout_graceful_shutdown=int(opts.drain_timeout_seconds) or None,
            timeout_keep_alive=75, loop="none", server_header=False, backlog=2048,
            ws="none",  # no WebSocket routes: and "auto" imports a WebSocket library
            http=guarded_protocol(limits, due_writes=self.due_writes),
            ssl_context_factory=tls_factory)

    @property
    def _grpc_host(self) -> str:
        return self.options.grpc_host if self.options.grpc_host is not None else self.options.host

    async def start(self) -> None:
        opts = self.options
        if self.worker is None and self.shares_ports:  # before any worker joins the ports
            if in_use(opts.host, opts.rest_api_port):
                raise ListenError(f"cannot listen on {opts.host}:{opts.rest_api_port} (REST "
                                  "API): Address already in use")
            if opts.grpc_port > 0 and in_use(grpc_probe_host(self._grpc_host), opts.grpc_port):
                raise ListenError(f"cannot listen on port {opts.grpc_port} (gRPC API): the "
                                  "port is in use")
        sock = rest_socket(opts.host, opts.rest_api_port, shared=self.shares_ports)
        self.rest_port = sock.getsockname()[1]
        # Models load (loader threads) while the servers are built: a restart is ready sooner.
        await self.manager.set_configs(list(opts.models))
        self._rest = RestListener(self._uvicorn_config(), sock)
        grpc_early = opts.grpc_port == 0 and self.worker is None  # the workers need its port
        if grpc_early:
            self._bind_grpc()
        if self.worker is None and opts.rest_workers > 1:
            self.pool = WorkerPool(
                opts.rest_workers, options=opts, serve=serve_worker,
                families=self.metrics.families, reload_everywhere=self.reload_config,
                port=self.rest_port, grpc_port=self.grpc_port if opts.grpc_port >= 0 else -1)
            self.metrics.add_source(self._workers_gauge)
            await self.pool.start()
        if self.shares_ports:
            # Processes that share the ports listen only once their models have settled: the
            # kernel hands new connections to every listening process, and none should land
            # on one that is still loading (TF Serving too opens its ports after the first
            # load). A lone process listens at once: health answers while models load.
            names = [c.name for c in opts.models]
            await self.manager.wait_until(lambda: self._stop.is_set() or all(
                self.manager.settled(n) for n in names), START_TIMEOUT)
            if self._stop.is_set():
                return
        if not grpc_early and opts.grpc_port >= 0 and (self.worker is None or opts.grpc_port):
            self._bind_grpc()
        self._tasks.append(self._rest.serve())
        if self._grpc is not None:
            await self._grpc.start()
        if self.keys is not None and opts.auth_keys_file:
            self._tasks.append(asyncio.create_task(
                self.keys.watch(opts.auth_reload_seconds, self._stop), name="keys-watch"))
        self._tasks.append(asyncio.create_task(
            self.manager.run_polling(opts.file_system_poll_wait_seconds, self._stop),
            name="fs-poll"))
        if self.worker is not None:
            log.info("REST worker %d listening on %s:%d%s", self.worker.index, opts.host,
                     self.rest_port, f" and gRPC port {self.grpc_port}" if self._grpc else "")
            return
        log.info("REST API on %s:%d%s%s, gRPC on port %d%s", opts.host, self.rest_port,
                 " (TLS)" if opts.rest_tls else "",
                 f" ({opts.rest_workers} processes)" if opts.rest_workers > 1 else "",
                 self.grpc_port, " (TLS)" if opts.grpc_tls else "")
        if opts.model_config_file and opts.model_config_file_poll_wait_seconds > 0:
            self._tasks.append(asyncio.create_task(self._poll_config_file(), name="cfg-poll"))

    def _workers_gauge(self) -> list[Metric]:
        m = Metric("corolla_rest_processes", "Processes serving the REST API now.", "gauge")
        m.add_sample("corolla_rest_processes", {},
                     1 + (self.pool.alive() if self.pool is not None else 0))
        return [m]

    async def _poll_config_file(self) -> None:
        path = self.options.model_config_file
        assert path is not None
        last: list[ModelConfig] | None = list(self.options.models)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(),
                                       self.options.model_config_file_poll_wait_seconds)
            if self._stop.is_set():
                return
            try:
                configs = await asyncio.to_thread(load_model_config_file, path)
                if self.options.allowed_model_roots:
                    from corolla.confine import check_configs

                    check_configs(configs, self.options.allowed_model_roots)
            except CorollaError as exc:
                log.error("model config file: %s (keeping the current models)", exc.message)
                continue
            if configs != last:
                log.info("model config file changed: serving %s", [c.name for c in configs])
                last = configs
                await self.manager.set_configs(configs)
                if self.pool is not None:
                    await self.pool.set_configs(configs)

    def request_stop(self) -> None:
        if not self.draining:
            log.info("shutdown requested: readiness is now false")
        self.draining = self.service.draining = True
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        self.draining = self.service.draining = True
        self._stop.set()
        workers_stop = None
        if self.pool is not None:  # they drain in parallel with this process
            workers_stop = asyncio.create_task(self.pool.stop(
                self.options.shutdown_grace_seconds + self.options.drain_timeout_seconds + 10))
        if self.options.shutdown_grace_seconds > 0:
            await asyncio.sleep(self.options.shutdown_grace_seconds)
        grpc_stop = None
        if self._grpc is not None:
            grpc_stop = asyncio.create_task(self._grpc.stop(self.options.drain_timeout_seconds))
        if self._rest is not None:
            await self._rest.drain()  # no connection that the kernel accepted is reset
        for t in self._tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await t
        if grpc_stop is not None:
            await grpc_stop
        if workers_stop is not None:
            await workers_stop
        await self.manager.close()
        self.sources.close()
        if self.prediction_cache is not None:
            self.prediction_cache.close()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.infer_pool.shutdown(wait=True)
        self.load_pool.shutdown(wait=True)
        log.info("stopped")


def _grpc_age(options: ServerOptions) -> list[tuple[str, int]]:
    """gRPC's connection age (GOAWAY, then the grace to finish calls): as REST's keep-alive
    connections, channels reconnect and spread over the processes again."""
    age = options.http_limits.max_connection_age
    if age <= 0:
        return []
    return [("grpc.max_connection_age_ms", int(age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(options.drain_timeout_seconds * 1000))]


async def serve(options: ServerOptions) -> int:
    server = CorollaServer(options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    await _start(server)
    await server.wait_stopped()
    return 0


async def _start(server: CorollaServer) -> None:
    """Start, or on failure (a port in use) close what was opened: the REST listener,
    thread pools, models."""
    try:
        await server.start()
    except BaseException:
        await server.shutdown()
        raise


async def serve_worker(options: ServerOptions, link: WorkerLink) -> None:
    """A worker process's server (corolla.workers spawns the process and calls this)."""
    server = CorollaServer(options, worker=link)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, server.request_stop)
    link.serve(WorkerControl(families=server.metrics.families,
                             set_configs=server.manager.set_configs,
                             reload_here=server.reload_config_here,
                             stop=server.request_stop), loop)
    await _start(server)
    await server.wait_stopped()
