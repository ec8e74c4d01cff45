"""The ONNX runtime's solo session: a request the process serves alone runs on more threads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corolla.config import ModelConfig
from corolla.demo_model import write_demo_version
from corolla.repository.manager import Manager
from corolla.repository.serving_map import LoadedVersion
from corolla.runtimes.base import Activity
from corolla.runtimes.onnx import OnnxOptions, OnnxRuntime, OnnxServable
from corolla.service import ModelSpec, PredictionService, ServiceOptions


@pytest.fixture
def version(tmp_path: Path) -> Path:
    write_demo_version(tmp_path / "colors", 1, size=16)
    return tmp_path / "colors" / "1"


def _record_runs(servable: OnnxServable) -> list[str]:
    """Which session each run used: 'solo' or 'main' (once the solo session is built)."""
    assert servable.solo_ready.wait(30)
    used: list[str] = []
    for attr, name in (("_solo", "solo"), ("_session", "main")):
        session = getattr(servable, attr)
        run = session.run

        def recorded(*args: Any, _run: Callable[..., Any] = run, _name: str = name,
                     **kwargs: Any) -> Any:
            used.append(_name)
            return _run(*args, **kwargs)

        session.run = recorded
    return used


def _x(rows: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": rng.uniform(0, 1, (rows, 16, 16, 3)).astype(np.float32)}


def test_solo_session_runs_only_for_a_request_alone(version: Path) -> None:
    activity = Activity()
    servable = OnnxRuntime(OnnxOptions(intra_op_threads=1, solo_threads=2), activity).load(
        version)
    used = _record_runs(servable)
    assert servable.has_solo_session
    x = _x(3)
    idle = servable.predict(x)["probabilities"]  # no request in flight: a load-time run
    activity.requests = 1
    alone = servable.predict(x)["probabilities"]
    activity.requests = 2
    crowded = servable.predict(x)["probabilities"]
    activity.requests = 1
    with activity.background():  # a model load's tuning or warmup is timing one thread
        during_load = servable.predict(x)["probabilities"]
    assert used == ["main", "solo", "main", "main"]
    for other in (alone, crowded, during_load):
        np.testing.assert_allclose(other, idle, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("options", "with_activity"),
    [
        (OnnxOptions(intra_op_threads=1, solo_threads=1), True),  # off
        (OnnxOptions(intra_op_threads=0, solo_threads=2), True),  # runs already use every core
        (OnnxOptions(intra_op_threads=2, solo_threads=2), True),  # no wider than the runs
        (OnnxOptions(intra_op_threads=1, solo_threads=2), False),  # nobody says who is alone
    ],
)
def test_no_solo_session_where_it_cannot_help(version: Path, options: OnnxOptions,
                                              with_activity: bool) -> None:
    runtime = OnnxRuntime(options, Activity() if with_activity else None)
    servable = runtime.load(version)
    assert not servable.has_solo_session
    assert servable.predict(_x())["probabilities"].shape == (1, 5)


async def test_service_counts_requests_in_flight_and_load_time_runs_are_background(
    version: Path,
) -> None:
    """The prediction service holds ``requests`` for each request's whole life (errors too);
    the tuning at load runs in the background, so it never takes the solo session."""
    activity = Activity()
    seen_at_load: list[bool] = []
    load, decode, infer = (ThreadPoolExecutor(2) for _ in range(3))
    manager = Manager(runtimes=[OnnxRuntime(OnnxOptions(intra_op_threads=1, solo_threads=2),
                                            activity)], executor=load)
    service = PredictionService(manager, options=ServiceOptions(), decode_executor=decode,
                                infer_executor=infer, activity=activity)

    def probe(loaded: LoadedVersion) -> None:
        seen_at_load.append(activity.alone())

    manager.prepare.append(service.in_background(probe))
    try:
        activity.requests = 1  # as if a request for another model were in flight
        await manager.set_configs([ModelConfig(name="colors", base_path=str(version.parent))])
        await manager.wait_until(manager.all_ready, timeout=20)
        activity.requests = 0
        assert seen_at_load == [False]
        servable = manager.serving_map.find("colors").servable
        assert isinstance(servable, OnnxServable)
        used = _record_runs(servable)

        await service.predict(ModelSpec(name="colors"), _x())
        assert activity.requests == 0
        assert used[-1] == "solo"
        two = await asyncio.gather(*(service.predict(ModelSpec(name="colors"), _x())
                                     for _ in range(2)))
        assert len(two) == 2 and activity.requests == 0
        with pytest.raises(Exception, match="missing input"):
            await service.predict(ModelSpec(name="colors"), {})
        assert activity.requests == 0
    finally:
        await asyncio.wait_for(manager.close(), 10)
        for pool in (load, decode, infer):
            pool.shutdown(wait=False, cancel_futures=True)


def _choose(c: Any, runs: int, solo_ms: float, main_ms: float) -> list[bool]:
    """``runs`` runs alone whose solo and main runs take the given times; their picks."""
    picks = []
    for _ in range(runs):
        solo = c.pick()
        picks.append(solo)
        c.record(solo, solo_ms if solo else main_ms)
    return picks


def _gaps(picks: list[bool], probe: bool) -> list[int]:
    """Runs between successive picks equal to ``probe`` (the first counted from the start)."""
    at = [i + 1 for i, p in enumerate(picks) if p is probe]
    return [b - a for a, b in zip([0, *at], at, strict=False)]


def test_solo_choice_follows_the_measurements_and_keeps_probing() -> None:
    from corolla.runtimes.onnx import SoloChoice

    c = SoloChoice()
    assert c.pick() is True  # nothing measured: try the solo session first
    c.record(True, 4.0)
    assert c.pick() is False  # then the main one, once
    c.record(False, 6.0)
    # Solo is faster: it runs, except for probes of the main session, which come ever less
    # often while they lose (every PROBE-th run alone, then twice that, up to MAX_PROBE).
    picks = _choose(c, 8 + 16 + 32 + 64 + 128 + 128, solo_ms=4.0, main_ms=6.0)
    assert _gaps(picks, probe=False) == [8, 16, 32, 64, 128, 128]
    assert c.prefers_solo() and c.probe_interval == SoloChoice.MAX_PROBE
    # The main session gets faster: its next probe wins, so probes come every PROBE-th run
    # again until the averages flip.
    picks = _choose(c, 200, solo_ms=4.0, main_ms=2.0)
    assert not c.prefers_solo()
    flip = picks.index(False) + 1
    assert flip == SoloChoice.MAX_PROBE  # the first probe after the change...
    assert _gaps(picks[flip:], probe=False)[0] == SoloChoice.PROBE  # ...brings the next soon
    # Now the main session is chosen, and the solo session's losing probes back off again.
    assert picks[-16:].count(True) <= 1
    # The kernel places the solo session's threads badly: runs alone stay on the main one.
    c = SoloChoice()
    picks = _choose(c, 2 + 8 + 16 + 32, solo_ms=9.0, main_ms=6.0)
    assert picks[:2] == [True, False] and _gaps(picks[2:], probe=True) == [8, 16, 32]
    # A solo run as fast as the main one is not worth its threads (MARGIN).
    c2 = SoloChoice()
    c2.record(True, 5.8)
    c2.record(False, 6.0)
    assert not c2.prefers_solo()


def test_a_solo_session_slower_than_the_main_one_stops_being_used(version: Path) -> None:
    import time

    activity = Activity()
    servable = OnnxRuntime(OnnxOptions(intra_op_threads=1, solo_threads=2), activity).load(
        version)
    used = _record_runs(servable)
    slow_run = servable._solo.run

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.02)  # as when both of its threads share one core
        return slow_run(*args, **kwargs)

    servable._solo.run = slow
    activity.requests = 1
    for _ in range(40):
        servable.predict(_x())
    assert used[:2] == ["solo", "main"]  # each measured once
    # then only the probes take it: after 8 more runs alone, then after 16 more (then 32)
    assert [i for i, u in enumerate(used) if u == "solo"] == [0, 9, 25]


async def test_metrics_show_the_solo_sessions_runs_and_measurements(version: Path) -> None:
    from corolla.metrics import Metrics

    activity = Activity()
    load, decode, infer = (ThreadPoolExecutor(2) for _ in range(3))
    manager = Manager(runtimes=[OnnxRuntime(OnnxOptions(intra_op_threads=1, solo_threads=2),
                                            activity)], executor=load)
    service = PredictionService(manager, options=ServiceOptions(batching=None),
                                decode_executor=decode, infer_executor=infer,
                                activity=activity)
    metrics = Metrics(process=False)
    metrics.instrument(service)  # the model gauges, as the server installs them
    try:
        await manager.set_configs([ModelConfig(name="colors", base_path=str(version.parent))])
        await manager.wait_until(manager.all_ready, timeout=20)
        loaded = manager.serving_map.find("colors").servable
        assert isinstance(loaded, OnnxServable) and loaded.solo_ready.wait(30)
        text = metrics.render().decode()
        assert 'corolla_onnx_solo_runs_total{model_name="colors",version="1"} 0.0' in text
        for _ in range(3):  # one at a time: each is alone (solo, main, then the faster one)
            await service.predict(ModelSpec(name="colors"), _x())
        text = metrics.render().decode()
        runs = [line for line in text.splitlines()
                if line.startswith("corolla_onnx_solo_runs_total{")]
        assert len(runs) == 1 and float(runs[0].rsplit(" ", 1)[1]) >= 1
        for session in ("main", "solo"):
            assert (f'corolla_onnx_alone_ms_per_row{{model_name="colors",version="1",'
                    f'session="{session}"}}') in text
    finally:
        await asyncio.wait_for(manager.close(), 10)
        for pool in (load, decode, infer):
            pool.shutdown(wait=False, cancel_futures=True)


def test_no_solo_stats_without_a_solo_session(version: Path) -> None:
    servable = OnnxRuntime(OnnxOptions(intra_op_threads=1, solo_threads=1), Activity()).load(
        version)
    assert servable.solo_stats() is None
