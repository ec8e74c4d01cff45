"""REST workers' pieces: merging several processes' metrics, and the control pipe's RPC."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from corolla.errors import Code, CorollaError, NotFound
from corolla.metrics import Metrics, merge_families, render_families
from corolla.workers import PipeRpc, serve_pipe


def _values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def test_merged_metrics_add_up_counts_and_keep_the_main_process_state() -> None:
    main, worker = Metrics(process=False), Metrics(process=False)
    for _ in range(3):
        main.observe_request("m", "Predict", "REST", "OK", 0.001)
    for _ in range(5):
        worker.observe_request("m", "Predict", "REST", "OK", 0.002)
    worker.observe_request("m", "Predict", "REST", "NOT_FOUND", 0.002)
    main.inflight.rest, worker.inflight.rest = 2, 3
    main.add_source(lambda: [_gauge("corolla_server_ready", 1)])
    worker.add_source(lambda: [_gauge("corolla_server_ready", 0)])
    merged = merge_families([main.families(), worker.families()])
    v = _values(render_families(merged).decode())
    assert v[':tensorflow:serving:request_count{model_name="m",status="OK"}'] == 8
    assert v[':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"}'] == 1
    key = (':tensorflow:serving:request_latency_count'
           '{model_name="m",API="Predict",entrypoint="REST"}')
    assert v[key] == 9
    assert v[key.replace("_count", "_sum")] == pytest.approx(3 * 1000 + 6 * 2000)
    assert v['corolla_inflight_requests{entrypoint="REST"}'] == 5  # summed gauge
    assert v["corolla_server_ready"] == 1  # the main process's state
    # One family per name, rendered like a single process's.
    text = render_families(merged).decode()
    assert text.count("# TYPE :tensorflow:serving:request_count counter") == 1
    assert render_families(main.families()) == main.render()


def _gauge(name: str, value: float) -> object:
    from prometheus_client.metrics_core import Metric

    m = Metric(name, "test gauge", "gauge")
    m.add_sample(name, {}, value)
    return m


def test_pipe_rpc_answers_errors_and_drops_late_replies() -> None:
    a, b = multiprocessing.Pipe()
    slow = threading.Event()

    def handle(message: tuple[object, ...]) -> object:
        if message[0] == "echo":
            return message[1]
        if message[0] == "missing":
            raise NotFound("no such thing")
        if message[0] == "slow":
            slow.wait(5)
            return "late"
        raise ValueError("boom")

    eof = threading.Event()
    serve_pipe(b, handle, eof.set, "test-pipe")
    rpc = PipeRpc(a)
    assert rpc.call(("echo", [1, 2]), 5) == [1, 2]
    with pytest.raises(CorollaError) as info:
        rpc.call(("missing",), 5)
    assert info.value.code == Code.NOT_FOUND and info.value.message == "no such thing"
    with pytest.raises(CorollaError) as info:
        rpc.call(("other",), 5)
    assert info.value.code == Code.INTERNAL
    with pytest.raises(TimeoutError):
        rpc.call(("slow",), 0.2)
    slow.set()
    # The late "late" reply is skipped; the next call gets its own answer.
    assert rpc.call(("echo", "next"), 5) == "next"
    rpc.close()
    deadline = time.monotonic() + 5
    while not eof.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert eof.is_set()  # the serving side notices that the other end is gone


def test_watchdog_counts_silence_from_when_the_main_process_ran_on_time() -> None:
    """A worker silent past the limit is killed, unless the main process itself was just
    paused (the whole process group stopped and resumed): then the worker gets the full limit
    again from the moment the main process noticed."""
    from corolla.workers import WorkerPool, _Worker

    class Proc:
        pid = 1
        killed = 0

        def kill(self) -> None:
            self.killed += 1

    from corolla.options import ServerOptions

    async def never(*args: object) -> None:
        raise AssertionError("not called")

    pool = WorkerPool(2, options=ServerOptions(worker_watchdog_seconds=3.0), serve=never,
                      families=list, reload_everywhere=never, port=0)
    now = time.monotonic()
    beat = multiprocessing.Value("d", now - 10, lock=False)

    def worker() -> _Worker:
        return _Worker(index=1, proc=Proc(), rpc=None, up=None,  # type: ignore[arg-type]
                       heartbeat=beat)

    w = worker()
    pool._on_time_since = now - 1  # the main process was late a second ago
    pool._check_heartbeat(w)
    assert w.proc.killed == 0  # type: ignore[attr-defined]
    pool._on_time_since = now - 5
    pool._check_heartbeat(w)
    pool._check_heartbeat(w)
    assert w.proc.killed == 1 and w.killed_hung  # type: ignore[attr-defined]
    fresh = worker()
    beat.value = 0.0  # has not beaten yet: still starting
    pool._check_heartbeat(fresh)
    assert fresh.proc.killed == 0  # type: ignore[attr-defined]
