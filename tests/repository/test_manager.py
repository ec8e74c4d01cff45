"""The manager with the fake runtime (corolla.repository.manager): loads, swaps, leases, retries."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corolla.config import ModelConfig, VersionPolicy
from corolla.errors import Code, InvalidArgument, NotFound
from corolla.repository.manager import Manager, ManagerOptions
from corolla.repository.policy import State
from corolla.repository.serving_map import LoadedVersion
from corolla.runtimes.fake import FakeRuntime, FakeServable, write_fake_version

WAIT = 10.0  # seconds: the bound on every wait for a state


class RecordingRuntime(FakeRuntime):
    """The fake runtime, plus: loads can be held at a gate, and every event is recorded."""

    def __init__(self) -> None:
        self.gates: dict[int, threading.Event] = {}
        self.events: list[tuple[str, int]] = []
        self.servables: dict[int, FakeServable] = {}
        self.manager: Manager | None = None
        self.serving_at_close: dict[int, set[int]] = {}

    def load(self, path: Path) -> FakeServable:
        v = int(path.name)
        self.events.append(("load", v))
        gate = self.gates.get(v)
        if gate is not None:
            assert gate.wait(WAIT), f"gate of version {v} never opened"
        servable = super().load(path)
        self.events.append(("loaded", v))
        self.servables[v] = servable
        close = servable.close

        def recording_close() -> None:
            self.events.append(("close", v))
            if self.manager is not None:
                entry = self.manager.serving_map.models.get(path.parent.name)
                self.serving_at_close[v] = set(entry.versions) if entry else set()
            close()

        servable.close = recording_close  # type: ignore[method-assign]
        return servable


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2, thread_name_prefix="load")
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def runtime() -> Iterator[RecordingRuntime]:
    rt = RecordingRuntime()
    yield rt
    for gate in rt.gates.values():
        gate.set()


ManagerFactory = Callable[..., Manager]


@pytest.fixture
async def make_manager(
    runtime: RecordingRuntime, executor: ThreadPoolExecutor
) -> AsyncIterator[ManagerFactory]:
    made: list[Manager] = []

    def make(**options: Any) -> Manager:
        m = Manager(runtimes=[runtime], executor=executor, options=ManagerOptions(**options))
        runtime.manager = m
        made.append(m)
        return m

    yield make
    for gate in runtime.gates.values():
        gate.set()
    for m in made:
        await asyncio.wait_for(m.close(), WAIT)


def cfg(base: Path, name: str = "m", **kw: Any) -> ModelConfig:
    return ModelConfig(name=name, base_path=str(base), **kw)


def state(manager: Manager, version: int, name: str = "m") -> State | None:
    for s in manager.statuses(name):
        if s.version == version:
            return s.state
    return None


def serving(manager: Manager, name: str = "m") -> set[int]:
    entry = manager.serving_map.models.get(name)
    return set(entry.versions) if entry else set()


async def until(manager: Manager, predicate: Callable[[], bool]) -> None:
    await manager.wait_until(predicate, timeout=WAIT)


def record_publishes(manager: Manager, name: str = "m") -> list[set[int]]:
    """Every serving map the manager publishes, as the set of versions of model ``name``."""
    seen: list[set[int]] = []
    publish = manager._publish

    def recording() -> None:
        publish()
        seen.append(serving(manager, name))

    manager._publish = recording  # type: ignore[method-assign]
    return seen


@pytest.fixture
def base(tmp_path: Path) -> Path:
    b = tmp_path / "m"
    b.mkdir()
    return b


# ---- loading and swapping -------------------------------------------------------------------


async def test_loads_the_latest_version(make_manager: ManagerFactory, base: Path) -> None:
    write_fake_version(base, 1)
    write_fake_version(base, 2, offset=2.0)
    m = make_manager()
    loads: list[tuple[str, int, Any]] = []
    m.on_load.append(lambda n, v, s, e: loads.append((n, v, e)))
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 2) == State.AVAILABLE)
    assert serving(m) == {2} and m.model_ready("m") and m.all_ready()
    assert [(s.version, s.state) for s in m.statuses("m")] == [(2, State.AVAILABLE)]
    assert loads == [("m", 2, None)]
    with m.serving_map.lease("m") as lv:
        out = lv.servable.predict({"x": np.ones((1, 4), np.float32)})
    assert out["outputs"].tolist() == [[4.0] * 4]


async def test_availability_preserving_swap(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1)
    m = make_manager()
    published = record_publishes(m)
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.AVAILABLE)

    runtime.gates[2] = threading.Event()
    write_fake_version(base, 2)
    await m.poll()
    await until(m, lambda: state(m, 2) == State.LOADING)
    # While version 2 loads, version 1 serves.
    assert state(m, 1) == State.AVAILABLE and m.serving_map.find("m").version == 1
    runtime.gates[2].set()
    await until(m, lambda: state(m, 2) == State.AVAILABLE and state(m, 1) in (None, State.END))
    assert serving(m) == {2}
    assert runtime.events.index(("loaded", 2)) < runtime.events.index(("close", 1))
    assert runtime.serving_at_close[1] == {2}
    # Once it had a version, the model was never without one: {1}, {1, 2}, then {2}.
    assert published[published.index({1}) :] == [{1}, {1, 2}, {2}]


async def test_resource_preserving_unloads_first(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1)
    m = make_manager(policy="resource_preserving")
    published = record_publishes(m)
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.AVAILABLE)
    write_fake_version(base, 2)
    await m.poll()
    await until(m, lambda: state(m, 2) == State.AVAILABLE)
    assert runtime.events == [("load", 1), ("loaded", 1), ("close", 1), ("load", 2), ("loaded", 2)]
    assert published[published.index({1}) :] == [{1}, set(), {2}]


async def test_in_flight_requests_finish_before_unload(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1)
    m = make_manager()
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.AVAILABLE)
    lease = m.serving_map.lease("m")  # a request in flight on version 1
    assert lease.inflight == 1

    write_fake_version(base, 2)
    await m.poll()
    await until(m, lambda: state(m, 1) == State.UNLOADING)
    # New requests get version 2 at once; version 1 waits for its lease.
    assert m.serving_map.find("m").version == 2
    for _ in range(20):
        await asyncio.sleep(0.005)  # give a wrong implementation the chance to close early
    assert not runtime.servables[1].closed and state(m, 1) == State.UNLOADING
    out = lease.servable.predict({"x": np.zeros((1, 4), np.float32)})  # still usable
    assert out["outputs"].shape == (1, 4)
    lease.release()
    await until(m, lambda: state(m, 1) in (None, State.END))
    assert runtime.servables[1].closed


async def test_unload_does_not_wait_forever_for_a_stuck_lease(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1)
    m = make_manager(unload_drain_timeout=0.05)
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.AVAILABLE)
    m.serving_map.lease("m")  # never returned
    write_fake_version(base, 2)
    await m.poll()
    await until(m, lambda: state(m, 1) in (None, State.END))
    assert runtime.servables[1].closed


async def test_rollback_when_the_newest_version_is_deleted(
    make_manager: ManagerFactory, base: Path
) -> None:
    write_fake_version(base, 1)
    write_fake_version(base, 2)
    m = make_manager()
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 2) == State.AVAILABLE)
    shutil.rmtree(base / "2")
    await m.poll()
    await until(m, lambda: serving(m) == {1} and state(m, 2) in (None, State.END))


# ---- failures -------------------------------------------------------------------------------


async def test_failed_load_is_retried_then_ends_with_its_error(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1, fail="weights are corrupt")
    m = make_manager(max_load_retries=2, load_retry_interval=0.01)
    errors: list[Any] = []
    m.on_load.append(lambda n, v, s, e: errors.append(e))
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.END)
    assert runtime.events == [("load", 1)] * 3
    assert len(errors) == 3 and all(e is not None for e in errors)
    (status,) = m.statuses("m")
    assert status.error is not None
    assert status.error.code == Code.FAILED_PRECONDITION
    assert "weights are corrupt" in status.error.message
    assert not m.model_ready("m")
    # Polling again does not retry a failed version that is still aspired.
    await m.poll()
    await m.poll()
    assert runtime.events == [("load", 1)] * 3


async def test_no_retries(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1, fail="nope")
    m = make_manager(max_load_retries=0)
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.END)
    assert runtime.events == [("load", 1)]


async def test_broken_new_version_keeps_the_old_one_serving(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1)
    m = make_manager(max_load_retries=1, load_retry_interval=0.01)
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.AVAILABLE)
    write_fake_version(base, 2, fail="bad graph")
    await m.poll()
    await until(m, lambda: state(m, 2) == State.END)
    assert serving(m) == {1} and state(m, 1) == State.AVAILABLE
    assert not runtime.servables[1].closed
    # A good version 3 replaces version 1.
    write_fake_version(base, 3)
    await m.poll()
    await until(m, lambda: serving(m) == {3} and state(m, 1) in (None, State.END))


async def test_retries_stop_when_the_version_is_no_longer_aspired(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1, fail="nope")
    m = make_manager(max_load_retries=5, load_retry_interval=60.0)
    await m.set_configs([cfg(base)])
    await until(m, lambda: any(s.error is not None for s in m.statuses("m")))
    shutil.rmtree(base / "1")
    await m.poll()
    await until(m, lambda: state(m, 1) in (None, State.END))
    assert runtime.events == [("load", 1)]


async def test_directory_no_runtime_recognises(make_manager: ManagerFactory, base: Path) -> None:
    (base / "1").mkdir()
    (base / "1" / "weights.bin").write_bytes(b"?")
    m = make_manager(max_load_retries=0)
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.END)
    (status,) = m.statuses("m")
    assert status.error is not None and "no runtime recognises" in status.error.message


class SavedModelStub(FakeRuntime):
    """Stands in for the TensorFlow runtime (which would import TensorFlow): platform "tensorflow",
    claims directories with saved_model.pb, serves them as fake versions."""

    platform = "tensorflow"

    def can_load(self, path: Path) -> bool:
        return (path / "saved_model.pb").is_file()


async def test_model_platform_tensorflow_serves_a_converted_onnx_version(
    runtime: RecordingRuntime, executor: ThreadPoolExecutor, base: Path
) -> None:
    """TF Serving configs say model_platform "tensorflow" on every model; a version that holds no
    SavedModel (e.g. written by `corolla convert`) is served by the runtime that recognises it,
    while SavedModel versions of the same model still go to the TensorFlow runtime."""
    saved = write_fake_version(base, 1, offset=1.0)
    (saved / "saved_model.pb").write_bytes(b"")
    write_fake_version(base, 2, offset=2.0)
    tf_stub = SavedModelStub()
    m = Manager(runtimes=[tf_stub, runtime], executor=executor,
                options=ManagerOptions(max_load_retries=0))
    try:
        # A directory nothing recognises still fails, in the configured runtime.
        (base / "3").mkdir()
        (base / "3" / "weights.bin").write_bytes(b"?")
        await m.set_configs([cfg(base, platform="tensorflow",
                                 version_policy=VersionPolicy(kind="all"))])
        await until(m, lambda: serving(m) == {1, 2} and state(m, 3) == State.END)
        platforms = {v: e.platform for v, e in m.serving_map.models["m"].versions.items()}
        assert platforms == {1: "tensorflow", 2: "fake"}
        assert [e for e in runtime.events if e[0] == "load"] == [("load", 2)]
        errors = [s.error.message for s in m.statuses("m") if s.version == 3 and s.error]
        assert errors, m.statuses("m")
    finally:
        await asyncio.wait_for(m.close(), WAIT)


async def test_failing_prepare_hook_fails_the_load_and_closes(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1)
    m = make_manager(max_load_retries=0)

    def warmup(lv: LoadedVersion) -> None:
        raise InvalidArgument("warmup failed")

    m.prepare.append(warmup)
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.END)
    assert runtime.servables[1].closed
    assert "warmup failed" in m.statuses("m")[0].error.message  # type: ignore[union-attr]


# ---- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy(), {3}),
        (VersionPolicy(kind="latest", num_versions=2), {2, 3}),
        (VersionPolicy(kind="all"), {1, 2, 3}),
        (VersionPolicy(kind="specific", versions=(1, 3)), {1, 3}),
    ],
)
async def test_version_policies(
    make_manager: ManagerFactory, base: Path, policy: VersionPolicy, expected: set[int]
) -> None:
    for v in (1, 2, 3):
        write_fake_version(base, v)
    m = make_manager()
    await m.set_configs([cfg(base, version_policy=policy)])
    await until(m, lambda: serving(m) == expected)
    await until(m, lambda: all(s.state == State.AVAILABLE for s in m.statuses("m")))
    assert {s.version for s in m.statuses("m")} == expected


async def test_changing_the_policy_reloads(make_manager: ManagerFactory, base: Path) -> None:
    for v in (1, 2, 3):
        write_fake_version(base, v)
    m = make_manager()
    await m.set_configs([cfg(base)])
    await until(m, lambda: serving(m) == {3})
    await m.set_configs([cfg(base, version_policy=VersionPolicy(kind="specific", versions=(1,)))])
    await until(m, lambda: serving(m) == {1})


async def test_version_labels(make_manager: ManagerFactory, base: Path) -> None:
    for v in (1, 2):
        write_fake_version(base, v, offset=float(v))
    m = make_manager()
    policy = VersionPolicy(kind="all")
    await m.set_configs(
        [cfg(base, version_policy=policy, version_labels={"stable": 1, "canary": 2})]
    )
    await until(m, lambda: serving(m) == {1, 2})
    assert m.serving_map.find("m", label="stable").version == 1
    assert m.serving_map.find("m", label="canary").version == 2
    assert m.serving_map.find("m").version == 2
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: beta"):
        m.serving_map.find("m", label="beta")
    with pytest.raises(InvalidArgument, match="Both version and version_label"):
        m.serving_map.find("m", version=1, label="stable")
    # Moving a label (a config reload) takes effect at once, without any load or unload.
    await m.set_configs([cfg(base, version_policy=policy, version_labels={"stable": 2})])
    assert m.serving_map.find("m", label="stable").version == 2
    with pytest.raises(InvalidArgument, match="label: canary"):
        m.serving_map.find("m", label="canary")


async def test_lookup_errors(make_manager: ManagerFactory, base: Path) -> None:
    write_fake_version(base, 1)
    m = make_manager()
    await m.set_configs([cfg(base)])
    await until(m, lambda: serving(m) == {1})
    with pytest.raises(NotFound, match=r"Servable not found for request: Latest\(other\)"):
        m.serving_map.find("other")
    with pytest.raises(NotFound, match=r"Servable not found for request: Specific\(m, 7\)"):
        m.serving_map.find("m", version=7)


async def test_missing_base_path_keeps_serving(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    good, missing = tmp_path / "good", tmp_path / "missing"
    write_fake_version(good, 1)
    m = make_manager()
    await m.set_configs([cfg(good, "good"), cfg(missing, "missing")])
    await until(m, lambda: serving(m, "good") == {1})
    assert m.has_model("missing") and m.statuses("missing") == []
    assert "Could not find base path" in (m.source_error("missing") or "")
    assert not m.all_ready() and m.model_ready("good")
    # The path appears later: the next poll loads it.
    write_fake_version(missing, 1)
    await m.poll()
    await until(m, lambda: serving(m, "missing") == {1})
    assert m.source_error("missing") is None and m.all_ready()


async def test_vanished_base_path_does_not_unload(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    write_fake_version(base, 1)
    m = make_manager()
    await m.set_configs([cfg(base)])
    await until(m, lambda: serving(m) == {1})
    moved = base.with_name("away")
    base.rename(moved)  # a flaky mount
    await m.poll()
    assert m.source_error("m") is not None
    assert serving(m) == {1} and not runtime.servables[1].closed
    moved.rename(base)
    await m.poll()
    assert m.source_error("m") is None and serving(m) == {1}
    assert runtime.events.count(("load", 1)) == 1


async def test_removing_a_model_unloads_it(
    make_manager: ManagerFactory, tmp_path: Path, runtime: RecordingRuntime
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_fake_version(a, 1)
    write_fake_version(b, 2)
    m = make_manager()
    await m.set_configs([cfg(a, "a"), cfg(b, "b")])
    await until(m, lambda: serving(m, "a") == {1} and serving(m, "b") == {2})
    await m.set_configs([cfg(b, "b")])
    await until(m, lambda: m.statuses("a") == [])
    assert not m.has_model("a") and serving(m, "a") == set()
    assert runtime.servables[1].closed and not runtime.servables[2].closed
    assert m.model_names() == ["b"]
    # ...and adding it back loads it again.
    await m.set_configs([cfg(a, "a"), cfg(b, "b")])
    await until(m, lambda: serving(m, "a") == {1})


async def test_removing_a_model_that_never_loaded(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    m = make_manager()
    await m.set_configs([cfg(missing, "missing")])
    await asyncio.wait_for(m.set_configs([]), WAIT)
    assert not m.has_model("missing")
    # Adding it back must not wait on the old, idle worker.
    write_fake_version(missing, 1)
    await asyncio.wait_for(m.set_configs([cfg(missing, "missing")]), WAIT)
    await until(m, lambda: serving(m, "missing") == {1})


async def test_close_unloads_everything(
    make_manager: ManagerFactory, tmp_path: Path, runtime: RecordingRuntime
) -> None:
    a = tmp_path / "a"
    write_fake_version(a, 1)
    m = make_manager()
    await m.set_configs([cfg(a, "a"), cfg(tmp_path / "missing", "missing")])
    await until(m, lambda: serving(m, "a") == {1})
    await asyncio.wait_for(m.close(), WAIT)
    assert runtime.servables[1].closed
    assert m.model_names() == [] and serving(m, "a") == set()


# ---- the aspired versions are what the source lists now (issue 22 items 7 and 8) -----------


async def test_version_deleted_while_its_predecessor_unloads_rolls_back(
    make_manager: ManagerFactory, base: Path, runtime: RecordingRuntime
) -> None:
    """Version 2 arrives, version 1 starts unloading (a request holds it), version 2 is deleted:
    version 1 is aspired again and must be loaded again once its unload ends, and the deleted
    version 2 must stop serving (it used to serve forever, with 1 stuck at END)."""
    write_fake_version(base, 1)
    m = make_manager()
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.AVAILABLE)
    lease = m.serving_map.lease("m")
    write_fake_version(base, 2)
    await m.poll()
    await until(m, lambda: state(m, 1) == State.UNLOADING)
    shutil.rmtree(base / "2")
    await m.poll()
    lease.release()
    await until(m, lambda: serving(m) == {1} and state(m, 2) is None)
    assert [(s.version, s.state) for s in m.statuses("m")] == [(1, State.AVAILABLE)]
    assert runtime.events.count(("loaded", 1)) == 2 and runtime.servables[2].closed


async def test_status_drops_failed_versions_the_source_no_longer_lists(
    make_manager: ManagerFactory, base: Path
) -> None:
    write_fake_version(base, 1)
    m = make_manager(max_load_retries=0)
    await m.set_configs([cfg(base)])
    await until(m, lambda: state(m, 1) == State.AVAILABLE)
    write_fake_version(base, 2, fail="bad graph")
    await m.poll()
    await until(m, lambda: state(m, 2) == State.END)
    assert [s.version for s in m.statuses("m")] == [2, 1]
    shutil.rmtree(base / "2")
    await m.poll()
    await until(m, lambda: state(m, 2) is None)
    assert [(s.version, s.state) for s in m.statuses("m")] == [(1, State.AVAILABLE)]
    assert serving(m) == {1}


async def test_source_error_shows_on_the_serving_versions(
    make_manager: ManagerFactory, base: Path
) -> None:
    write_fake_version(base, 1)
    m = make_manager()
    await m.set_configs([cfg(base)])
    await until(m, lambda: serving(m) == {1})
    moved = base.with_name("away")
    base.rename(moved)
    await m.poll()
    (status,) = m.statuses("m")
    # Still serving: error_code stays OK, the note says what failed.
    assert status.state == State.AVAILABLE and status.error is None
    assert "Could not find base path" in status.note
    moved.rename(base)
    await m.poll()
    assert m.statuses("m")[0].error is None and m.statuses("m")[0].note == ""


@pytest.mark.parametrize("policy", ["availability_preserving", "resource_preserving"])
async def test_base_path_change_serves_the_new_source(
    make_manager: ManagerFactory, tmp_path: Path, runtime: RecordingRuntime, policy: str
) -> None:
    """A live config change of base_path is applied: the same version number from the new
    path replaces the old copy (availability-preserving: the model is never without a
    version), and a newer version there is loaded."""
    old, new = tmp_path / "old" / "m", tmp_path / "new" / "m"
    write_fake_version(old, 1, offset=1.0)
    write_fake_version(new, 1, offset=5.0)
    m = make_manager(policy=policy)
    published = record_publishes(m)
    await m.set_configs([cfg(old)])
    await until(m, lambda: serving(m) == {1})

    def offset() -> float | None:
        try:
            with m.serving_map.lease("m") as lv:
                x = lv.servable.predict({"x": np.zeros((1, 4), np.float32)})
        except NotFound:  # resource-preserving: between the unload and the load
            return None
        return float(x["outputs"][0, 0])

    assert offset() == 1.0
    await m.set_configs([cfg(new)])
    await until(m, lambda: offset() == 5.0 and m.settled("m"))
    assert [(s.version, s.state, s.error) for s in m.statuses("m")] == [
        (1, State.AVAILABLE, None)]
    if policy == "availability_preserving":
        assert set() not in published[published.index({1}):]
    write_fake_version(new, 2, offset=7.0)
    await m.poll()
    await until(m, lambda: serving(m) == {2})
    assert offset() == 7.0


async def test_base_path_change_to_a_broken_copy_keeps_the_old_one(
    make_manager: ManagerFactory, tmp_path: Path
) -> None:
    old, new = tmp_path / "old" / "m", tmp_path / "new" / "m"
    write_fake_version(old, 1, offset=1.0)
    write_fake_version(new, 1, fail="truncated graph")
    m = make_manager()
    await m.set_configs([cfg(old)])
    await until(m, lambda: serving(m) == {1})
    await m.set_configs([cfg(new)])
    await until(m, lambda: m.statuses("m")[0].error is not None)
    (status,) = m.statuses("m")
    assert status.state == State.AVAILABLE and "truncated graph" in status.error.message
    with m.serving_map.lease("m") as lv:
        assert lv.path == old / "1"
    # Back to the old base path: nothing to reload, the error goes.
    await m.set_configs([cfg(old)])
    await until(m, lambda: m.statuses("m")[0].error is None)
