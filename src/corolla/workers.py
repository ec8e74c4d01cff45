"""``--rest_workers N``: the REST and gRPC APIs served by N processes sharing their ports.

(The flag says "REST" for history: every process serves both APIs.)

One Python process turns at most one core into HTTP parsing, JSON and routing (the GIL). When
that is the bottleneck (cheap models: per-request server work costs more than inference), more
processes are the only way to use more cores. Layout:

- The **main process** is the server as with one worker: REST, gRPC, the models, the config
  file poll, metrics. It binds the REST and gRPC ports with ``SO_REUSEPORT``.
- **Workers** (``N - 1`` processes, started with ``spawn``) each run the same REST app and gRPC
  services with their own manager, models and batching, and bind the same two ports with
  ``SO_REUSEPORT``: the kernel spreads new connections over the listening processes (a gRPC
  channel is one connection, so one client channel stays on one process). A worker starts
  listening only once its models have settled (loaded or failed), so no connection ever lands
  on a process that is still loading. Each polls the model base paths itself (version
  directories appear in every process within ``--file_system_poll_wait_seconds``).
- **Control** goes over two pipes per worker. Main -> worker: new model configs (from the
  config file poll, or ReloadConfig, which returns only once every process has applied it),
  metrics collection. Worker -> main: a metrics scrape that landed on the worker is answered by
  the main process with every process's metrics merged, so Prometheus sees one server whichever
  process answers: counters and histograms summed, in-flight gauges summed, model state from
  the main process; a ReloadConfig that landed on the worker is carried out by the main
  process, for every process.
- **Lifecycle**: SIGTERM to the main process drains every worker the same way (readiness false,
  listeners close, in-flight requests finish); a worker that dies is restarted (backoff up to
  30 s); a worker whose main process disappears (its pipe closes) shuts itself down.
- **Watchdog**: a worker that is alive but hung (its event loop stuck in native code, or the
  process stopped) would keep its share of new connections waiting forever. Each worker's
  event loop stamps a shared clock every ``HEARTBEAT`` seconds; one whose stamp is older than
  ``--rest_worker_watchdog_seconds`` is killed (SIGKILL) and restarted as a dead one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Protocol, cast

from corolla.config import ModelConfig, ReloadConfig
from corolla.errors import Code, CorollaError, Unavailable
from corolla.metrics import Family, merge_families, render_families
from corolla.options import ServerOptions

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

log = logging.getLogger("corolla.workers")

RPC_TIMEOUT = 10.0  # seconds; a metrics scrape or a config push that takes longer is an error
START_TIMEOUT = 600.0  # seconds for a worker to load its models and start listening
MAX_BACKOFF = 30.0
HEARTBEAT = 1.0  # seconds between a worker's heartbeat stamps
WATCH_INTERVAL = 0.5  # seconds between the main process's checks of its workers
MIN_WATCHDOG = 2 * HEARTBEAT  # the shortest --rest_worker_watchdog_seconds (0: off)

# A control message: its kind, then its arguments (picklable).
Message = tuple[object, ...]


class Heartbeat(Protocol):
    """A shared double (``multiprocessing.Value("d")``): time.monotonic() of a worker loop's
    last beat; CLOCK_MONOTONIC is the same clock in every process."""

    value: float


@dataclass(frozen=True, kw_only=True)
class WorkerControl:
    """What a worker process's control pipe may do to its server (corolla.server wires it)."""

    families: Callable[[], list[Family]]
    set_configs: Callable[[Sequence[ModelConfig]], Awaitable[None]]
    # ReloadConfig in this process only (the main process asks every process).
    reload_here: ReloadConfig
    stop: Callable[[], None]


# Serves a worker process: builds its server from the options and runs it until it stops
# (a module-level function, so that ``spawn`` can name it: corolla.server.serve_worker).
WorkerServe = Callable[[ServerOptions, "WorkerLink"], Awaitable[None]]


class PipeRpc:
    """Blocking request/response over one end of a pipe: one call at a time, tagged replies
    (a reply that arrives after its caller gave up is recognised and dropped)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def call(self, message: Message, timeout: float) -> object:
        # One call at a time: a call waits for the one in progress (a ReloadConfig can take
        # minutes), but no longer than its own timeout.
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            raise TimeoutError(f"no answer to {message[0]!r} in {timeout:.0f} s (busy)")
        try:
            rid = next(self._ids)
            self.conn.send((rid, message))
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.conn.poll(left):
                    raise TimeoutError(f"no answer to {message[0]!r} in {timeout:.0f} s")
                got, ok, value = self.conn.recv()
                if got == rid:
                    if ok:
                        return value
                    code, text = value
                    raise CorollaError(text, Code[code])
        finally:
            self._lock.release()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()


def serve_pipe(conn: Connection, handle: Callable[[Message], object],
               on_eof: Callable[[], None], name: str) -> threading.Thread:
    """Answer requests arriving on ``conn`` in a daemon thread until the other end closes."""

    def loop() -> None:
        while True:
            try:
                rid, message = conn.recv()
            except (EOFError, OSError):
                on_eof()
                return
            try:
                reply: tuple[object, ...] = (rid, True, handle(message))
            except CorollaError as exc:
                reply = (rid, False, (exc.code.name, exc.message))
            except Exception as exc:
                log.exception("control request %r failed", message[0])
                reply = (rid, False, ("INTERNAL", f"{message[0]} failed: {exc!r}"))
            try:
                conn.send(reply)
            except (EOFError, OSError):
                on_eof()
                return

    t = threading.Thread(target=loop, name=name, daemon=True)
    t.start()
    return t


# ---- the main process's side ----------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    proc: BaseProcess
    rpc: PipeRpc  # main -> worker
    up: Connection  # worker -> main, answered by a serve_pipe thread
    # The worker loop's last beat (0.0: none yet).
    heartbeat: Heartbeat | None = None
    listening: bool = False
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)
    killed_hung: bool = False


class WorkerPool:
    """The main process's handle on its workers."""

    def __init__(self, count: int, *, options: ServerOptions, serve: WorkerServe,
                 families: Callable[[], list[Family]], reload_everywhere: ReloadConfig,
                 port: int, grpc_port: int = -1) -> None:
        """``options``: the main process's (each worker gets them with the shared ports and
        the current models); ``serve``: runs a worker's server; ``families``: the main
        process's metrics; ``reload_everywhere``: a ReloadConfig that a worker received,
        carried out for every process. ``port``, ``grpc_port``: the ports the main process
        listens on, which the workers share (``grpc_port`` -1: no gRPC)."""
        self.count = count
        self.options = options
        self._serve = serve
        self._families = families
        self._reload_everywhere = reload_everywhere
        self.port = port
        self.grpc_port = grpc_port
        self.configs: list[ModelConfig] = list(options.models)
        self.workers: list[_Worker] = []
        self._ctx = multiprocessing.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._monitor: asyncio.Task[None] | None = None
        self._on_time_since = 0.0  # when _watch last found itself running late (monotonic)

    # lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for i in range(1, self.count):
            self.workers.append(self._spawn(i))
        self._monitor = asyncio.create_task(self._watch(), name="rest-workers")

    def _spawn(self, index: int, restarts: int = 0) -> _Worker:
        main_cmd, worker_cmd = self._ctx.Pipe()
        main_up, worker_up = self._ctx.Pipe()
        options = replace(self.options, rest_api_port=self.port,
                          grpc_port=self.grpc_port,
                          models=tuple(self.configs), model_config_file_poll_wait_seconds=0.0)
        # CLOCK_MONOTONIC is the same clock in every process.
        heartbeat = cast(Heartbeat, self._ctx.Value("d", 0.0, lock=False))
        proc = self._ctx.Process(target=worker_main, name=f"corolla-rest-{index}",
                                 args=(self._serve, options, index, worker_cmd, worker_up,
                                       heartbeat),
                                 daemon=False)
        proc.start()
        worker_cmd.close()
        worker_up.close()
        w = _Worker(index=index, proc=proc, rpc=PipeRpc(main_cmd), up=main_up, restarts=restarts,
                    heartbeat=heartbeat)
        serve_pipe(main_up, self._answer_worker, lambda: None, f"rest-{index}-up")
        log.info("REST worker %d started (pid %d)", index, proc.pid)
        return w

    def _check_heartbeat(self, w: _Worker) -> None:
        """Kill a worker whose event loop has not beaten within the watchdog's limit."""
        limit = self.options.worker_watchdog_seconds
        if limit <= 0 or w.killed_hung or w.heartbeat is None:
            return
        last = w.heartbeat.value
        if last == 0.0:
            return  # still starting (imports); START_TIMEOUT bounds its model loading
        # Silence counts from when this process last ran on time itself: after the whole
        # process group was paused (Ctrl-Z, docker pause) every worker gets the full limit.
        silent = time.monotonic() - max(last, self._on_time_since)
        if silent <= limit:
            return
        log.error("REST worker %d (pid %s): its event loop has not run for %.0f s (limit "
                  "--rest_worker_watchdog_seconds=%g): killing it", w.index, w.proc.pid,
                  silent, limit)
        w.killed_hung = True
        with contextlib.suppress(ProcessLookupError, OSError):
            w.proc.kill()  # SIGKILL also ends a stopped process

    async def _watch(self) -> None:
        tick = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            if now - tick > WATCH_INTERVAL + HEARTBEAT:
                self._on_time_since = now  # this process was paused or starved too
            tick = now
            for i, w in enumerate(self.workers):
                if self._stopping:
                    break
                if w.proc.is_alive():
                    self._check_heartbeat(w)
                    continue
                backoff = min(MAX_BACKOFF, 0.5 * 2 ** w.restarts)
                if time.monotonic() - w.started < backoff and not w.killed_hung:
                    continue  # a worker that keeps dying is restarted ever more slowly
                log.error("REST worker %d (pid %s) exited with code %s: restarting it",
                          w.index, w.proc.pid, w.proc.exitcode)
                w.rpc.close()
                with contextlib.suppress(OSError):
                    w.up.close()
                lived = time.monotonic() - w.started
                self.workers[i] = self._spawn(w.index, 0 if lived > 60 else w.restarts + 1)

    def alive(self) -> int:
        return sum(1 for w in self.workers if w.proc.is_alive())

    async def stop(self, timeout: float) -> None:
        """SIGTERM every worker (they drain like the main process), then wait for them."""
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
        for w in self.workers:
            if w.proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    w.proc.terminate()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            await asyncio.to_thread(w.proc.join, max(0.1, deadline - time.monotonic()))
            if w.proc.is_alive():
                log.error("REST worker %d did not stop in time: killing it", w.index)
                w.proc.kill()
                await asyncio.to_thread(w.proc.join, 5)
            w.rpc.close()
            with contextlib.suppress(OSError):
                w.up.close()

    # configs

    async def set_configs(self, configs: Sequence[ModelConfig]) -> None:
        """The config file changed: every worker serves ``configs`` (without waiting)."""
        self.configs = list(configs)
        await self._each(("configs", self.configs), RPC_TIMEOUT)

    async def reload_config(self, configs: Sequence[ModelConfig], timeout: float | None) -> None:
        """ReloadConfig: every worker applies ``configs`` and waits for its models."""
        self.configs = list(configs)
        await self._each(("reload", self.configs, timeout), _reload_wait(timeout),
                         strict=True)

    async def _each(self, message: Message, timeout: float, *,
                    strict: bool = False) -> None:
        live = [w for w in self.workers if w.proc.is_alive()]
        results = await asyncio.gather(
            *(asyncio.to_thread(w.rpc.call, message, timeout) for w in live),
            return_exceptions=True)
        for w, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                log.error("REST worker %d: %s failed: %s", w.index, message[0], result)
                if strict:
                    if isinstance(result, CorollaError):
                        raise result
                    raise Unavailable(f"REST worker {w.index}: {result}")

    # metrics

    async def gather_metrics(self) -> bytes:
        """Every process's metrics merged (the main process's first)."""
        own = self._families()
        live = [w for w in self.workers if w.proc.is_alive()]
        results = await asyncio.gather(
            *(asyncio.to_thread(w.rpc.call, ("families",), RPC_TIMEOUT) for w in live),
            return_exceptions=True)
        parts = [own]
        for w, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("REST worker %d: no metrics (%s)", w.index, result)
            else:
                parts.append(cast(list[Family], result))
        return render_families(merge_families(parts))

    def _answer_worker(self, message: Message) -> object:
        assert self._loop is not None
        if message[0] == "metrics":
            return asyncio.run_coroutine_threadsafe(self.gather_metrics(), self._loop).result(
                RPC_TIMEOUT)
        if message[0] == "reload":  # a ReloadConfig that a worker received: for every process
            configs = cast(list[ModelConfig], message[1])
            timeout = cast(float | None, message[2])
            return asyncio.run_coroutine_threadsafe(
                _await(self._reload_everywhere(configs, timeout)), self._loop
            ).result(_reload_wait(timeout))
        raise CorollaError(f"unknown request {message[0]!r}", Code.INVALID_ARGUMENT)


def _reload_wait(timeout: float | None) -> float:
    """How long a process waits for a ReloadConfig to be applied elsewhere."""
    return (timeout if timeout is not None else START_TIMEOUT) + RPC_TIMEOUT


# ---- the worker process's side --------------------------------------------------------------


class WorkerLink:
    """A REST worker's handle on the main process."""

    def __init__(self, index: int, cmd: Connection, up: Connection) -> None:
        self.index = index
        self.cmd = cmd
        self.up = PipeRpc(up)

    async def gather_metrics(self) -> bytes:
        """Every process's metrics, merged by the main process."""
        return cast(bytes, await asyncio.to_thread(self.up.call, ("metrics",), 2 * RPC_TIMEOUT))

    async def reload_config(self, configs: Sequence[ModelConfig], timeout: float | None
                            ) -> None:
        """ReloadConfig received by this worker: the main process applies it to every process
        (this one included, through the control pipe) and answers when all have."""
        await asyncio.to_thread(self.up.call, ("reload", list(configs), timeout),
                                _reload_wait(timeout) + RPC_TIMEOUT)

    def serve(self, control: WorkerControl, loop: asyncio.AbstractEventLoop) -> None:
        """Answer the main process's control requests (in a thread) until its pipe closes."""

        def run(coro: Awaitable[object], timeout: float | None) -> object:
            return asyncio.run_coroutine_threadsafe(_await(coro), loop).result(timeout)

        def handle(message: Message) -> object:
            kind = message[0]
            if kind == "families":
                return run(_await_value(control.families), RPC_TIMEOUT)
            if kind == "configs":
                return run(control.set_configs(cast(list[ModelConfig], message[1])),
                           RPC_TIMEOUT)
            if kind == "reload":
                timeout = cast(float | None, message[2])
                return run(control.reload_here(cast(list[ModelConfig], message[1]), timeout),
                           None if timeout is None else timeout + RPC_TIMEOUT)
            raise CorollaError(f"unknown request {kind!r}", Code.INVALID_ARGUMENT)

        def orphaned() -> None:
            log.warning("REST worker %d: the main process is gone; shutting down", self.index)
            loop.call_soon_threadsafe(control.stop)

        serve_pipe(self.cmd, handle, orphaned, "control")


async def _await(awaitable: Awaitable[object]) -> object:
    """An awaitable as a coroutine (what run_coroutine_threadsafe takes)."""
    return await awaitable


async def _await_value(fn: Callable[[], object]) -> object:
    """``fn()`` called on the event loop (where the state it reads lives)."""
    return fn()


def worker_main(serve: WorkerServe, options: ServerOptions, index: int, cmd: Connection,
                up: Connection, heartbeat: Heartbeat) -> None:
    """Entry point of a worker process (``spawn``: a fresh interpreter)."""
    from corolla.logging_setup import configure_logging, tag_process

    configure_logging(options.log_level, options.log_format)
    tag_process(f"rest-{index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process, which
    # stops the workers in order; SIGTERM (its handler: ``serve``) is the worker's own stop
    link = WorkerLink(index, cmd, up)
    try:
        import uvloop

        uvloop.run(_worker(serve, options, link, heartbeat))
    except ImportError:
        asyncio.run(_worker(serve, options, link, heartbeat))


def _beat(loop: asyncio.AbstractEventLoop, heartbeat: Heartbeat) -> None:
    """Stamp the shared clock now and again in HEARTBEAT seconds (the main's watchdog)."""
    heartbeat.value = time.monotonic()
    loop.call_later(HEARTBEAT, _beat, loop, heartbeat)


async def _worker(serve: WorkerServe, options: ServerOptions, link: WorkerLink,
                  heartbeat: Heartbeat) -> None:
    _beat(asyncio.get_running_loop(), heartbeat)
    await serve(options, link)
