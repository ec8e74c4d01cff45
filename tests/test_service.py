"""The prediction service in process (corolla.service): batching on and off, bad neighbours."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corolla.batching import BatchingOptions
from corolla.demo_model import LABELS, write_demo_version
from corolla.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from corolla.repository.manager import Manager
from corolla.repository.serving_map import LoadedVersion
from corolla.runner import Slots, VersionRunner
from corolla.runplan import RunPlan
from corolla.runtimes.fake import FakeRuntime, FakeServable, write_fake_version
from corolla.runtimes.onnx import OnnxRuntime
from corolla.service import ModelSpec, PredictionService, ServiceOptions

ServiceFactory = Callable[[BatchingOptions | None], "asyncio.Future[PredictionService]"]


def jpeg(rgb: tuple[int, int, int], size: tuple[int, int] = (30, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, "JPEG")
    return buf.getvalue()


def images(*datas: bytes) -> np.ndarray:
    arr = np.empty(len(datas), dtype=object)
    arr[:] = list(datas)
    return arr


@pytest.fixture
async def make_service(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    colors = tmp_path / "colors"
    write_demo_version(colors, 1, size=16)
    write_fake_version(tmp_path / "fake", 1, labels=["a", "b", "c", "d"])
    write_fake_version(tmp_path / "slow", 1, predict_seconds=0.3)
    pools: list[ThreadPoolExecutor] = []
    managers: list[Manager] = []

    async def make(batching: BatchingOptions | None, **options: object) -> PredictionService:
        from corolla.config import ModelConfig

        load, decode, infer = (ThreadPoolExecutor(2) for _ in range(3))
        pools.extend([load, decode, infer])
        manager = Manager(runtimes=[OnnxRuntime(), FakeRuntime()], executor=load)
        managers.append(manager)
        service = PredictionService(
            manager,
            options=ServiceOptions(batching=batching, **options),  # type: ignore[arg-type]
            decode_executor=decode,
            infer_executor=infer,
        )
        await manager.set_configs(
            [ModelConfig(name=n, base_path=str(tmp_path / n)) for n in ("colors", "fake", "slow")]
        )
        await manager.wait_until(manager.all_ready, timeout=20)
        return service

    yield make
    for m in managers:
        await asyncio.wait_for(m.close(), 10)
    for p in pools:
        p.shutdown(wait=False, cancel_futures=True)


BATCHING = BatchingOptions(max_batch_size=8, batch_timeout_micros=50_000, eager=False)


def runner_of(service: PredictionService, name: str) -> VersionRunner:
    runner = service.manager.serving_map.find(name).runner
    assert runner is not None
    return runner


def plan_of(loaded: LoadedVersion) -> RunPlan:
    assert loaded.runner is not None
    return loaded.runner.plan


def slots_of(loaded: LoadedVersion) -> Slots:
    assert loaded.runner is not None and loaded.runner.slots is not None
    return loaded.runner.slots


def colour_inputs() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    out: list[dict[str, np.ndarray]] = []
    for rows in (1, 3, 2, 1, 1):
        out.append({"images": rng.uniform(0, 1, (rows, 16, 16, 3)).astype(np.float32)})
    out.append({"images": images(jpeg((200, 10, 10)), jpeg((10, 10, 200)))})
    return out


async def test_results_identical_with_batching_on_and_off(
    make_service: Callable[..., object],
) -> None:
    spec = ModelSpec(name="colors")
    results = {}
    for name, batching in (("off", None), ("on", BATCHING)):
        service = await make_service(batching)  # type: ignore[misc]
        outs = await asyncio.gather(*(service.predict(spec, x) for x in colour_inputs()))
        results[name] = [o.outputs["probabilities"] for o in outs]
        if batching is not None:
            batcher = runner_of(service, "colors").batcher
            assert batcher is not None
    for off, on in zip(results["off"], results["on"], strict=True):
        assert off.shape == on.shape
        np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-6)
    assert [LABELS[i] for i in results["on"][-1].argmax(axis=1)] == ["red", "blue"]


async def test_requests_share_a_batch_and_results_match(
    make_service: Callable[..., object],
) -> None:
    service: PredictionService = await make_service(BATCHING)  # type: ignore[misc]
    servable = service.manager.serving_map.find("fake").servable
    assert isinstance(servable, FakeServable)
    xs = [np.full((1, 4), i, np.float32) for i in range(6)]
    outs = await asyncio.gather(*(service.predict(ModelSpec(name="fake"), {"x": x}) for x in xs))
    assert servable.batch_sizes == [6]  # one batch
    for x, out in zip(xs, outs, strict=True):
        assert np.array_equal(out.outputs["outputs"], x * 2)


async def test_a_bad_request_fails_alone(make_service: Callable[..., object]) -> None:
    service: PredictionService = await make_service(BATCHING)  # type: ignore[misc]
    spec = ModelSpec(name="colors")
    good = {"images": np.full((1, 16, 16, 3), 0.5, np.float32)}
    nan = {"images": np.full((1, 16, 16, 3), np.nan, np.float32)}
    shape = {"images": np.zeros((1, 8, 8, 3), np.float32)}
    broken = {"images": images(jpeg((1, 2, 3)), b"not an image")}
    results = await asyncio.gather(
        service.predict(spec, good),
        service.predict(spec, nan),
        service.predict(spec, good),
        service.predict(spec, shape),
        service.predict(spec, broken),
        service.predict(spec, good),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "PredictResult",
        "InvalidArgument",
        "PredictResult",
        "InvalidArgument",
        "InvalidArgument",
        "PredictResult",
    ]
    assert "NaN" in results[1].message  # type: ignore[union-attr]
    assert "shape [1,8,8,3]" in results[3].message  # type: ignore[union-attr]
    assert "image 1" in results[4].message  # type: ignore[union-attr]
    first = results[0].outputs["probabilities"]  # type: ignore[union-attr]
    assert all(
        np.array_equal(r.outputs["probabilities"], first)  # type: ignore[union-attr]
        for r in (results[2], results[5])
    )


async def test_deadline_exceeded_while_waiting(make_service: Callable[..., object]) -> None:
    service: PredictionService = await make_service(
        BatchingOptions(max_batch_size=1, num_batch_threads=1, batch_timeout_micros=0)
    )  # type: ignore[misc]
    spec = ModelSpec(name="slow")
    x = {"x": np.zeros((1, 4), np.float32)}
    first = asyncio.ensure_future(service.predict(spec, x))
    with pytest.raises(DeadlineExceeded):
        await service.predict(spec, x, deadline=time.monotonic() + 0.1)
    assert (await first).outputs["outputs"].shape == (1, 4)
    with pytest.raises(DeadlineExceeded, match="before the request could run"):
        await service.predict(spec, x, deadline=time.monotonic() - 1)


async def test_lookups_and_classify(make_service: Callable[..., object]) -> None:
    service: PredictionService = await make_service(None)  # type: ignore[misc]
    result = await service.classify(
        ModelSpec(name="fake"), {"x": np.array([[0, 5, 0, 0.0]])}, top_k=2
    )
    assert [label for label, _ in result.classes[0]] == ["b", "a"]
    with pytest.raises(FailedPrecondition, match="not a classifier"):
        await service.classify(ModelSpec(name="slow"), {"x": np.zeros((1, 4))})
    with pytest.raises(FailedPrecondition, match="does not declare image preprocessing"):
        await service.predict_images(ModelSpec(name="fake"), [jpeg((1, 2, 3))])
    with pytest.raises(InvalidArgument, match="Both version and version_label"):
        service.statuses("colors", 1, "stable")
    with pytest.raises(NotFound, match="Could not find any versions of model nope"):
        service.statuses("nope")
    # TF Serving answers an unknown label INVALID_ARGUMENT (ServerCore::GetModelVersionForLabel).
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: stable"):
        service.statuses("colors", label="stable")
    strings = np.array([[b"a", b"b", b"c", b"d"]], dtype=object)
    with pytest.raises(InvalidArgument, match="expects float32 values, got strings"):
        await service.predict(ModelSpec(name="fake"), {"x": strings})
    with pytest.raises(InvalidArgument, match="output tensor alias not found"):
        await service.predict(
            ModelSpec(name="fake"), {"x": np.zeros((1, 4))}, output_filter=["nope"]
        )


async def test_cheap_models_run_inline_with_default_batching(
    make_service: Callable[..., object],
) -> None:
    """With Corolla's defaults (autotune), a model cheaper than a thread hand-off runs on the
    event loop; a slow one still goes through its batcher; big requests never run inline."""
    import threading

    from corolla.runplan import INLINE_MAX_ROWS

    service: PredictionService = await make_service(  # type: ignore[misc]
        BatchingOptions(autotune=True))
    fake = service.manager.serving_map.find("fake")
    slow = service.manager.serving_map.find("slow")
    assert plan_of(fake).inline_rows == INLINE_MAX_ROWS
    assert not plan_of(slow).inline_rows
    # Tuned batch sizes keep a queue of at least QUEUE_MIN_ROWS rows before shedding load.
    from corolla.runplan import QUEUE_MIN_ROWS

    for loaded in (fake, slow):
        runner = loaded.runner
        assert runner is not None
        if runner.batcher is not None:
            opts = runner.batcher.options
            assert opts.max_enqueued_batches * opts.max_batch_size >= QUEUE_MIN_ROWS
        else:
            assert runner.slots is not None and runner.slots.limit >= QUEUE_MIN_ROWS
    servable = fake.servable
    assert isinstance(servable, FakeServable)
    threads: list[str] = []
    original = servable.predict

    def recording(*args: object, **kw: object) -> object:
        threads.append(threading.current_thread().name)
        return original(*args, **kw)  # type: ignore[arg-type]

    servable.predict = recording  # type: ignore[method-assign]
    loop_thread = threading.current_thread().name
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = await service.predict(ModelSpec(name="fake"), {"x": x})
    assert np.array_equal(out.outputs["outputs"], x * 2)
    big = np.ones((INLINE_MAX_ROWS + 1, 4), np.float32)
    out = await service.predict(ModelSpec(name="fake"), {"x": big})
    assert np.array_equal(out.outputs["outputs"], big * 2)
    assert threads[0] == loop_thread and threads[1] != loop_thread
    # Same answers with batching off.
    plain: PredictionService = await make_service(None)  # type: ignore[misc]
    again = await plain.predict(ModelSpec(name="fake"), {"x": x})
    assert np.array_equal(again.outputs["outputs"], x * 2)


async def test_a_model_that_batching_does_not_help_runs_unbatched_with_a_bounded_queue(
    tmp_path: Path,
) -> None:
    """Autotune finds no saving per row: no batcher, same answers, the queue still sheds load."""
    from corolla.config import ModelConfig
    from corolla.errors import ResourceExhausted
    from corolla.runplan import QUEUE_MIN_ROWS

    write_fake_version(tmp_path / "flat", 1, cpu_ms_per_row=0.4)
    pools = [ThreadPoolExecutor(2) for _ in range(3)]
    manager = Manager(runtimes=[FakeRuntime()], executor=pools[0])
    service = PredictionService(manager, options=ServiceOptions(
        batching=BatchingOptions(autotune=True)), decode_executor=pools[1],
        infer_executor=pools[2])
    try:
        await manager.set_configs([ModelConfig(name="flat", base_path=str(tmp_path / "flat"))])
        await manager.wait_until(manager.all_ready, timeout=20)
        loaded = manager.serving_map.find("flat")
        assert loaded.runner is not None and loaded.runner.batcher is None
        slots = loaded.runner.slots
        assert isinstance(slots, Slots) and slots.limit >= QUEUE_MIN_ROWS
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        out = await service.predict(ModelSpec(name="flat"), {"x": x})
        assert np.array_equal(out.outputs["outputs"], x * 2)
        slots.limit = 2
        results = await asyncio.gather(
            *(service.predict(ModelSpec(name="flat"), {"x": x}) for _ in range(8)),
            return_exceptions=True)
        refused = [r for r in results if isinstance(r, ResourceExhausted)]
        served = [r for r in results if not isinstance(r, BaseException)]
        assert len(served) == 2 and len(refused) == 6, results
        assert slots.used == 0  # every slot given back
    finally:
        await manager.close()
        for p in pools:
            p.shutdown(wait=True)


async def test_one_core_processes_run_cheap_unbatched_requests_on_the_event_loop(
    tmp_path: Path,
) -> None:
    """inline_requests (a process with one core): a cheap unbatched model's decoding and
    inference run on the loop thread, with the same answers, deadlines and queue bound as in
    threads; a model above INLINE_WHOLE_MAX_MS stays in threads."""
    import threading

    from corolla.config import ModelConfig
    from corolla.errors import ResourceExhausted
    from corolla.runplan import INLINE_WHOLE_MAX_MS

    write_demo_version(tmp_path / "colors", 1, size=16)
    write_fake_version(tmp_path / "flat", 1, cpu_ms_per_row=0.4)
    write_fake_version(tmp_path / "heavy", 1, cpu_ms_per_row=INLINE_WHOLE_MAX_MS * 1.5)
    write_fake_version(tmp_path / "slow", 1, predict_seconds=0.3)
    names = ("colors", "flat", "heavy", "slow")
    pools: list[ThreadPoolExecutor] = []
    managers: list[Manager] = []

    async def make(batching: BatchingOptions | None, inline: bool) -> PredictionService:
        load, decode, infer = (ThreadPoolExecutor(2) for _ in range(3))
        pools.extend([load, decode, infer])
        manager = Manager(runtimes=[OnnxRuntime(), FakeRuntime()], executor=load)
        managers.append(manager)
        service = PredictionService(
            manager, options=ServiceOptions(batching=batching, inline_requests=inline),
            decode_executor=decode, infer_executor=infer)
        await manager.set_configs(
            [ModelConfig(name=n, base_path=str(tmp_path / n)) for n in names])
        await manager.wait_until(manager.all_ready, timeout=30)
        return service

    try:
        threaded = await make(None, False)
        for batching in (None, BatchingOptions(autotune=True)):
            service = await make(batching, True)
            find = service.manager.serving_map.find
            for name in ("colors", "flat"):  # batched or not, on the loop
                assert plan_of(find(name)).decode_on_loop is True
            assert not plan_of(find("heavy")).decode_on_loop
            assert not plan_of(find("slow")).decode_on_loop  # it waits 0.3 s a call

        # The rest on the unbatched service, where every decision above is fixed.
        service = await make(None, True)
        find = service.manager.serving_map.find

        seen: list[str] = []
        for name in ("colors", "heavy"):
            inner = find(name).servable
            original = inner.predict

            def recording(*a: object, _orig: object = original, _seen: list[str] = seen,
                          **kw: object) -> object:
                _seen.append(threading.current_thread().name)
                return _orig(*a, **kw)  # type: ignore[operator]

            inner.predict = recording  # type: ignore[method-assign]
        loop_thread = threading.current_thread().name
        photos = [jpeg((200, 10, 10)), jpeg((10, 10, 200)), jpeg((10, 200, 10))]
        outs = await asyncio.gather(
            *(service.predict_images(ModelSpec(name="colors"), [p]) for p in photos),
            service.predict_images(ModelSpec(name="colors"), photos))
        wants = await asyncio.gather(
            *(threaded.predict_images(ModelSpec(name="colors"), [p]) for p in photos),
            threaded.predict_images(ModelSpec(name="colors"), photos))
        for out, want in zip(outs, wants, strict=True):
            np.testing.assert_allclose(out.outputs["probabilities"],
                                       want.outputs["probabilities"], rtol=1e-6)
        assert [LABELS[i] for i in outs[-1].outputs["probabilities"].argmax(1)] == [
            "red", "blue", "green"]
        assert seen and set(seen) == {loop_thread}
        seen.clear()
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        out = await service.predict(ModelSpec(name="heavy"), {"x": x})
        assert np.array_equal(out.outputs["outputs"], x * 2)
        assert seen and loop_thread not in seen
        with pytest.raises(InvalidArgument, match="image 0"):
            await service.predict_images(ModelSpec(name="colors"), [b"not a photo"])

        # Deadlines: requests queued behind a long job expire, before their inference or
        # before their photo is decoded, and are never run.
        flat = find("flat")
        inner = flat.servable
        assert isinstance(inner, FakeServable)
        one = {"x": np.zeros((1, 4), np.float32)}
        blocker = service.loop_runner.submit(time.sleep, 0.3, urgent=True)  # holds the loop 0.3 s
        calls = len(inner.batch_sizes)
        with pytest.raises(DeadlineExceeded, match="waiting for the model"):
            await service.predict(ModelSpec(name="flat"), one,
                                  deadline=time.monotonic() + 0.1)
        assert len(inner.batch_sizes) == calls  # the expired request never ran
        await blocker
        seen.clear()
        blocker = service.loop_runner.submit(time.sleep, 0.3, urgent=True)
        with pytest.raises(DeadlineExceeded, match="decode the image"):
            await service.predict_images(ModelSpec(name="colors"), [photos[0]],
                                         deadline=time.monotonic() + 0.1)
        assert seen == []  # nor was it decoded and inferred
        await blocker

        # The queue bound holds for the whole request, photos still to decode included.
        colors_slots, flat_slots = Slots(2), Slots(2)
        runner_of(service, "colors").slots = colors_slots
        runner_of(service, "flat").slots = flat_slots
        for call in (lambda: service.predict_images(ModelSpec(name="colors"), [photos[1]]),
                     lambda: service.predict(ModelSpec(name="flat"), {"x": x})):
            results = await asyncio.gather(*(call() for _ in range(6)),
                                           return_exceptions=True)
            assert sum(isinstance(r, ResourceExhausted) for r in results) == 4, results
            assert not any(isinstance(r, BaseException) and not isinstance(
                r, ResourceExhausted) for r in results), results
        assert colors_slots.used == 0 and flat_slots.used == 0

        # A big upload is decoded in a thread, so the loop keeps serving meanwhile.
        decoders: list[str] = []
        import corolla.service as service_module

        original_pre = service_module.preprocess_image

        def recording_pre(*a: object, **kw: object) -> object:
            decoders.append(threading.current_thread().name)
            return original_pre(*a, **kw)  # type: ignore[arg-type]

        service_module.preprocess_image = recording_pre  # type: ignore[assignment]
        try:
            big = io.BytesIO()
            Image.fromarray(np.random.default_rng(0).integers(
                0, 255, (900, 900, 3), dtype=np.uint8)).save(big, "PNG")
            assert len(big.getvalue()) > service_module.INLINE_DECODE_MAX_BYTES
            await service.predict_images(ModelSpec(name="colors"), [big.getvalue()])
            await service.predict_images(ModelSpec(name="colors"), [photos[2]])
        finally:
            service_module.preprocess_image = original_pre  # type: ignore[assignment]
        assert decoders[0] != loop_thread and decoders[1] == loop_thread
    finally:
        for m in managers:
            await asyncio.wait_for(m.close(), 10)
        for p in pools:
            p.shutdown(wait=False, cancel_futures=True)


async def test_one_core_processes_run_batches_on_the_event_loop(tmp_path: Path) -> None:
    """inline_requests with a model that batching makes cheaper (a fixed cost per call): its
    batches run on the loop thread, bounded to what holds the loop at most
    INLINE_WHOLE_MAX_MS, and concurrent requests share them; without inline_requests the same
    model runs its batches in threads."""
    import threading

    from corolla.config import ModelConfig
    from corolla.runplan import INLINE_WHOLE_MAX_MS, Mode

    # A fixed cost per call: batching saves CPU. "cheap": 32 rows hold the loop ~6 ms; "dear":
    # 32 rows ~36 ms of CPU, above the bound, so its batches on the loop are smaller.
    write_fake_version(tmp_path / "cheap", 1, cpu_ms_per_call=2.0, cpu_ms_per_row=0.1)
    write_fake_version(tmp_path / "dear", 1, cpu_ms_per_call=4.0, cpu_ms_per_row=1.0)
    pools: list[ThreadPoolExecutor] = []
    managers: list[Manager] = []

    async def make(inline: bool) -> PredictionService:
        load, decode, infer = (ThreadPoolExecutor(2) for _ in range(3))
        pools.extend([load, decode, infer])
        manager = Manager(runtimes=[FakeRuntime()], executor=load)
        managers.append(manager)
        service = PredictionService(
            manager, options=ServiceOptions(batching=BatchingOptions(autotune=True),
                                            inline_requests=inline),
            decode_executor=decode, infer_executor=infer)
        await manager.set_configs(
            [ModelConfig(name=n, base_path=str(tmp_path / n)) for n in ("cheap", "dear")])
        await manager.wait_until(manager.all_ready, timeout=30)
        return service

    try:
        threaded, inline = await make(False), await make(True)
        for service, on_loop in ((threaded, False), (inline, True)):
            plan = plan_of(service.manager.serving_map.find("cheap"))
            assert plan.decode_on_loop is on_loop
            assert (plan.mode is Mode.BATCH_ON_LOOP) is on_loop
        dear = plan_of(inline.manager.serving_map.find("dear"))
        tuned = dear.tune
        assert tuned is not None
        size = max(s for s in tuned.cost_per_row_ms if tuned.blocking_ms(s) <= INLINE_WHOLE_MAX_MS)
        assert 2 <= size < 32 and dear.decode_on_loop is True
        assert dear.batching is not None
        assert dear.rows == dear.batching.max_batch_size == size

        loaded = inline.manager.serving_map.find("cheap")
        inner = loaded.servable
        assert isinstance(inner, FakeServable)
        threads: list[int] = []
        original = inner.predict

        def recording(*a: object, **kw: object) -> object:
            threads.append(threading.get_ident())
            return original(*a, **kw)  # type: ignore[arg-type]

        inner.predict = recording  # type: ignore[method-assign]
        calls = len(inner.batch_sizes)
        xs = [np.full((1, 4), i, np.float32) for i in range(12)]
        outs = await asyncio.gather(*(inline.predict(ModelSpec(name="cheap"), {"x": x})
                                      for x in xs))
        for x, out in zip(xs, outs, strict=True):
            assert np.array_equal(out.outputs["outputs"], x * 2)
        assert set(threads) == {threading.get_ident()}
        assert len(inner.batch_sizes) - calls < 12  # requests shared batches

        # The queue bound is taken before a request's photos wait to be decoded on the loop.
        from corolla.errors import ResourceExhausted

        slots = slots_of(loaded)
        assert loaded.runner is not None and loaded.runner.batcher is not None
        batcher = loaded.runner.batcher
        assert slots.limit == batcher.options.max_enqueued_batches * batcher.options.max_batch_size
        slots.limit = 2
        results = await asyncio.gather(
            *(inline.predict(ModelSpec(name="cheap"), {"x": x}) for x in xs[:6]),
            return_exceptions=True)
        assert sum(isinstance(r, ResourceExhausted) for r in results) == 4, results
        assert slots.used == 0
    finally:
        for m in managers:
            await asyncio.wait_for(m.close(), 10)
        for p in pools:
            p.shutdown(wait=False, cancel_futures=True)


@pytest.mark.parametrize("batching", [BatchingOptions(max_batch_size=4), None])
async def test_big_requests_run_in_chunks_of_the_batch_size(
    make_service: Callable[..., object], batching: BatchingOptions | None
) -> None:
    """A model's working memory grows with the rows of a run: a request with more rows than
    the batch size (batching's max_batch_size; 32 with batching off) runs as several runs of at
    most that many rows, one after another, and answers as if run whole."""
    service: PredictionService = await make_service(batching)  # type: ignore[misc]
    loaded = service.manager.serving_map.find("fake")
    servable = loaded.servable
    assert isinstance(servable, FakeServable)
    limit = 4 if batching is not None else 32
    rows = 2 * limit + 3
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    servable.batch_sizes.clear()
    out = await service.predict(ModelSpec(name="fake"), {"x": x})
    assert np.array_equal(out.outputs["outputs"], x * 2)
    assert servable.batch_sizes == [limit, limit, 3]


async def test_too_many_images_are_refused_before_any_is_decoded(
    make_service: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few hundred bytes of JPEG decode to a whole model input (here 16x16x3 float32 = 3072
    bytes): the number of images a request may carry is bounded by the decoded size, and a
    request over it is refused before decoding."""
    import corolla.service as service_module

    service: PredictionService = await make_service(  # type: ignore[misc]
        None, max_decoded_image_bytes=5 * 16 * 16 * 3 * 4)
    decoded: list[int] = []
    original = service_module.preprocess_image

    def counting(*args: object, **kw: object) -> np.ndarray:
        decoded.append(1)
        return original(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(service_module, "preprocess_image", counting)
    spec = ModelSpec(name="colors")
    red = jpeg((250, 0, 0))
    out = await service.predict_images(spec, [red] * 5)
    assert out.outputs["probabilities"].shape[0] == 5 and len(decoded) == 5
    decoded.clear()
    with pytest.raises(InvalidArgument, match="at most 5 per request"):
        await service.predict_images(spec, [red] * 6)
    assert decoded == []


def test_top_classes_orders_best_first_keeps_label_order_on_ties_and_bounds_k() -> None:
    from corolla.model_dir import ModelMetadata
    from corolla.service import top_classes

    md = ModelMetadata(signatures={}, labels=("a", "b", "c", "d"), scores_output="p")
    scores = np.array([[0.1, 0.4, 0.4, 0.1], [0.7, 0.1, 0.15, 0.05]], dtype=np.float32)
    got = top_classes(md, {"p": scores}, 3)
    assert [[lbl for lbl, _ in row] for row in got] == [["b", "c", "a"], ["a", "c", "b"]]
    assert got[0][0][1] == float(np.float64(scores[0, 1]))  # float32 widened, not rounded
    assert all(type(s) is float for row in got for _, s in row)
    assert [len(r) for r in top_classes(md, {"p": scores}, 99)] == [4, 4]  # at most the labels
    assert [len(r) for r in top_classes(md, {"p": scores}, None)] == [4, 4]  # None: all


def test_top_classes_applies_softmax_to_logits() -> None:
    from corolla.model_dir import ModelMetadata
    from corolla.service import top_classes

    md = ModelMetadata(signatures={}, labels=("x", "y"), scores_output="logits",
                       scores_are_probabilities=False)
    (row,) = top_classes(md, {"logits": np.array([[0.0, np.log(3.0)]])}, 2)
    assert [lbl for lbl, _ in row] == ["y", "x"]
    assert row[0][1] == pytest.approx(0.75) and row[1][1] == pytest.approx(0.25)
