"""Dynamic batching (corolla.batching): batch formation, timeouts, overflow, deadlines, padding."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from clocks import ManualClock

from corolla.batching import Batcher, BatchingOptions, parse_batching_parameters
from corolla.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from corolla.looprunner import LoopRunner
from corolla.model_dir import ModelMetadata, Signature, TensorSpec
from corolla.tensors import Tensors

LONG = 60_000_000  # a batch timeout (micros) that must never be what closes a batch


class Recorder:
    """A servable that records every batch and can be held at a gate."""

    def __init__(self, gate: bool = False) -> None:
        self.metadata = ModelMetadata(
            signatures={
                "serving_default": Signature(
                    inputs={"x": TensorSpec(name="x", dtype="float32", shape=(-1, -1))},
                    outputs={"y": TensorSpec(name="y", dtype="float32", shape=(-1, -1))},
                )
            }
        )
        self.batches: list[np.ndarray] = []
        self.gate = threading.Event()
        if not gate:
            self.gate.set()
        self.entered = threading.Semaphore(0)
        self.fail: Exception | None = None
        self.bad_output = False

    def predict(
        self,
        inputs: Tensors,
        *,
        signature: str = "serving_default",
        output_filter: tuple[str, ...] = (),
    ) -> Tensors:
        self.entered.release()
        assert self.gate.wait(10), "test gate never opened"
        x = inputs["x"]
        self.batches.append(x.copy())
        if self.fail is not None:
            raise self.fail
        if self.bad_output:
            return {"y": x[:1]}
        return {"y": x * 10, "sig": np.full((x.shape[0], 1), len(signature), np.float32)}

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    def close(self) -> None:
        pass


async def entered(servable: Recorder, n: int = 1) -> None:
    """Wait (bounded) until ``n`` batches have entered predict."""
    for _ in range(n):
        ok = await asyncio.get_running_loop().run_in_executor(
            None, servable.entered.acquire, True, 10
        )
        assert ok, "no batch reached the servable"


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


def rows(*values: float, width: int = 2) -> Tensors:
    return {"x": np.array([[v] * width for v in values], np.float32)}


def far() -> float:
    return time.monotonic() + 30


@pytest.fixture
async def gated(executor: ThreadPoolExecutor) -> AsyncIterator[Recorder]:
    servable = Recorder(gate=True)
    yield servable
    servable.gate.set()


# ---- batch formation ------------------------------------------------------------------------


async def test_full_batch_runs_at_once_without_waiting_for_the_timeout(
    executor: ThreadPoolExecutor,
) -> None:
    servable = Recorder()
    b = Batcher(
        servable,
        BatchingOptions(max_batch_size=4, batch_timeout_micros=LONG, eager=False),
        executor,
    )
    futs = [b.submit(rows(i), deadline=far()) for i in range(4)]
    results = await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert servable.sizes == [4]
    for i, r in enumerate(results):
        assert r["y"].tolist() == [[10.0 * i] * 2]


async def test_batches_never_exceed_max_batch_size(executor: ThreadPoolExecutor) -> None:
    servable = Recorder()
    b = Batcher(
        servable,
        BatchingOptions(max_batch_size=4, batch_timeout_micros=LONG, eager=False),
        executor,
    )
    # 2 + 2 fill a batch; the next 3 rows do not fit beside the 2 before them.
    futs = [
        b.submit(rows(1, 2), deadline=far()),
        b.submit(rows(3, 4), deadline=far()),
        b.submit(rows(5), deadline=far()),
        b.submit(rows(6, 7, 8), deadline=far()),
    ]
    results = await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert servable.sizes == [4, 4]
    assert [r["y"][:, 0].tolist() for r in results] == [[10, 20], [30, 40], [50], [60, 70, 80]]


async def test_timeout_closes_a_partial_batch(executor: ThreadPoolExecutor) -> None:
    # TF Serving's semantics (eager=False): wait for a full batch or the timeout.
    servable = Recorder()
    timeout = 0.15
    clock = ManualClock()
    b = Batcher(
        servable,
        BatchingOptions(max_batch_size=8, batch_timeout_micros=int(timeout * 1e6), eager=False),
        executor, clock=clock,
    )
    start = clock.now()
    futs = [b.submit(rows(i), deadline=far()) for i in range(3)]
    await asyncio.sleep(0)
    assert not any(f.done() for f in futs)
    clock.advance(timeout * 0.9)  # not yet
    await asyncio.sleep(0)
    assert not any(f.done() for f in futs) and servable.sizes == []
    clock.advance(timeout * 0.1)
    await asyncio.wait_for(asyncio.gather(*futs), 10)
    elapsed = clock.now() - start
    assert servable.sizes == [3]
    assert timeout * 0.9 <= elapsed < timeout + 5


async def test_timeout_counts_from_the_oldest_request(executor: ThreadPoolExecutor) -> None:
    servable = Recorder()
    timeout = 0.4
    clock = ManualClock()
    b = Batcher(
        servable,
        BatchingOptions(max_batch_size=8, batch_timeout_micros=int(timeout * 1e6), eager=False),
        executor, clock=clock,
    )
    start = clock.now()
    first = b.submit(rows(1), deadline=far())
    clock.advance(timeout / 2)  # a second request half-way does not restart the clock
    second = b.submit(rows(2), deadline=far())
    clock.advance(timeout / 2)
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert servable.sizes == [2]
    assert clock.now() - start < timeout * 1.375  # a restarted clock: 1.5


async def test_eager_dispatch_runs_at_once_when_a_thread_is_idle(
    executor: ThreadPoolExecutor, gated: Recorder
) -> None:
    b = Batcher(
        gated,
        BatchingOptions(
            max_batch_size=8, batch_timeout_micros=LONG, num_batch_threads=1, eager=True
        ),
        executor,
    )
    first = b.submit(rows(1), deadline=far())
    await entered(gated)  # ran alone, without waiting for the (long) timeout
    # While the only thread is busy, later requests gather into one batch...
    later = [b.submit(rows(i), deadline=far()) for i in (2, 3, 4)]
    gated.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 10)
    # ...which runs as soon as the thread frees up, not at the timeout.
    assert gated.sizes == [1, 3]


async def test_requests_that_cannot_share_a_batch(executor: ThreadPoolExecutor) -> None:
    servable = Recorder()
    b = Batcher(
        servable,
        BatchingOptions(max_batch_size=8, batch_timeout_micros=20_000, eager=False),
        executor,
    )
    futs = [
        b.submit(rows(1, width=2), deadline=far()),
        b.submit(rows(2, width=3), deadline=far()),  # another row shape
        b.submit(rows(3, width=2), deadline=far(), signature="other"),
        b.submit(rows(4, width=2), deadline=far(), output_filter=("y",)),
        b.submit(rows(5, width=2), deadline=far()),
    ]
    results = await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert sorted(servable.sizes) == [1, 1, 1, 2]
    assert [r["y"][0, 0] for r in results] == [10, 20, 30, 40, 50]
    assert results[2]["sig"][0, 0] == len("other")


# ---- padding --------------------------------------------------------------------------------


async def test_padding_to_allowed_batch_sizes_is_removed(executor: ThreadPoolExecutor) -> None:
    servable = Recorder()
    b = Batcher(
        servable,
        BatchingOptions(
            max_batch_size=8,
            allowed_batch_sizes=(2, 4, 8),
            batch_timeout_micros=10_000,
            eager=False,
        ),
        executor,
    )
    futs = [b.submit(rows(1), deadline=far()), b.submit(rows(2, 3), deadline=far())]
    results = await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert servable.sizes == [4]  # 3 rows padded to 4
    assert results[0]["y"].shape == (1, 2) and results[1]["y"].shape == (2, 2)
    assert results[1]["y"][:, 0].tolist() == [20, 30]
    futs = [b.submit(rows(*range(5)), deadline=far())]
    (r,) = await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert servable.sizes[-1] == 8 and r["y"].shape == (5, 2)


async def test_pad_variable_length_inputs(executor: ThreadPoolExecutor) -> None:
    servable = Recorder()
    b = Batcher(
        servable,
        BatchingOptions(
            max_batch_size=8,
            batch_timeout_micros=10_000,
            pad_variable_length_inputs=True,
            eager=False,
        ),
        executor,
    )
    futs = [b.submit(rows(1, width=2), deadline=far()), b.submit(rows(2, width=4), deadline=far())]
    results = await asyncio.wait_for(asyncio.gather(*futs), 10)
    assert servable.sizes == [2]
    assert servable.batches[0].tolist() == [[1, 1, 0, 0], [2, 2, 2, 2]]
    assert results[0]["y"].shape == (1, 4)


# ---- overload and deadlines -----------------------------------------------------------------


async def test_full_queue_refuses_with_resource_exhausted(
    executor: ThreadPoolExecutor, gated: Recorder
) -> None:
    b = Batcher(
        gated,
        BatchingOptions(
            max_batch_size=1, max_enqueued_batches=2, num_batch_threads=1, batch_timeout_micros=0
        ),
        executor,
    )
    running = b.submit(rows(1), deadline=far())
    await entered(gated)
    queued = [b.submit(rows(2), deadline=far()), b.submit(rows(3), deadline=far())]
    with pytest.raises(ResourceExhausted, match=r"queue .* is full"):
        b.submit(rows(4), deadline=far())
    assert b.queue_depth == 2
    gated.gate.set()
    results = await asyncio.wait_for(asyncio.gather(running, *queued), 10)
    assert [r["y"][0, 0] for r in results] == [10, 20, 30]
    # Once the queue drains, requests are taken again.
    assert (await asyncio.wait_for(b.submit(rows(5), deadline=far()), 10))["y"][0, 0] == 50


async def test_expired_requests_are_not_run(executor: ThreadPoolExecutor, gated: Recorder) -> None:
    b = Batcher(
        gated,
        BatchingOptions(max_batch_size=4, num_batch_threads=1, batch_timeout_micros=0),
        executor,
    )
    running = b.submit(rows(1), deadline=far())
    await entered(gated)
    expired = b.submit(rows(2), deadline=time.monotonic())  # gone by the time a thread frees
    live = b.submit(rows(3), deadline=far())
    gated.gate.set()
    assert (await asyncio.wait_for(live, 10))["y"][0, 0] == 30
    with pytest.raises(DeadlineExceeded, match="waited in the batch queue"):
        await expired
    await running
    assert [b[:, 0].tolist() for b in gated.batches] == [[1], [3]]  # row 2 never ran


async def test_cancelled_request_is_dropped_and_others_unaffected(
    executor: ThreadPoolExecutor, gated: Recorder
) -> None:
    b = Batcher(
        gated,
        BatchingOptions(max_batch_size=4, num_batch_threads=1, batch_timeout_micros=0),
        executor,
    )
    running = b.submit(rows(1), deadline=far())
    await entered(gated)
    gone = b.submit(rows(2), deadline=far())
    kept = b.submit(rows(3), deadline=far())
    gone.cancel()  # the client went away
    gated.gate.set()
    assert (await asyncio.wait_for(kept, 10))["y"][0, 0] == 30
    await running
    assert [b[:, 0].tolist() for b in gated.batches] == [[1], [3]]


# ---- failures stay with their requests ------------------------------------------------------


async def test_bad_request_fails_alone(executor: ThreadPoolExecutor) -> None:
    servable = Recorder()
    b = Batcher(
        servable,
        BatchingOptions(max_batch_size=8, batch_timeout_micros=20_000, eager=False),
        executor,
    )
    good1 = b.submit(rows(1), deadline=far())
    with pytest.raises(InvalidArgument, match="same batch size"):
        b.submit(
            {"x": np.zeros((2, 2), np.float32), "z": np.zeros((3, 2), np.float32)}, deadline=far()
        )
    good2 = b.submit(rows(2), deadline=far())
    results = await asyncio.wait_for(asyncio.gather(good1, good2), 10)
    assert servable.sizes == [2]
    assert [r["y"][0, 0] for r in results] == [10, 20]


async def test_model_failure_reaches_every_request_of_the_batch(
    executor: ThreadPoolExecutor,
) -> None:
    servable = Recorder()
    servable.fail = RuntimeError("boom")
    b = Batcher(
        servable,
        BatchingOptions(max_batch_size=2, batch_timeout_micros=LONG, eager=False),
        executor,
    )
    futs = [b.submit(rows(1), deadline=far()), b.submit(rows(2), deadline=far())]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert all(isinstance(r, Internal) and "boom" in r.message for r in results)
    # The batcher keeps working after a failure.
    servable.fail = None
    futs = [b.submit(rows(3), deadline=far()), b.submit(rows(4), deadline=far())]
    assert len(await asyncio.wait_for(asyncio.gather(*futs), 10)) == 2


async def test_outputs_without_the_batch_dimension_are_internal(
    executor: ThreadPoolExecutor,
) -> None:
    servable = Recorder()
    servable.bad_output = True
    b = Batcher(
        servable,
        BatchingOptions(max_batch_size=2, batch_timeout_micros=LONG, eager=False),
        executor,
    )
    futs = [b.submit(rows(1), deadline=far()), b.submit(rows(2), deadline=far())]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert all(isinstance(r, Internal) and "batch size 2" in r.message for r in results)


# ---- batches on the event loop (a process with one core) --------------------------------------


async def _decoded_then_batched(runner: LoopRunner, batcher: Batcher, value: float,
                                decode_seconds: float = 0.0) -> Tensors:
    """A request as the service runs it inline: its photo decoded by a (normal) runner job,
    then submitted to the batcher."""

    def decode() -> Tensors:
        time.sleep(decode_seconds)  # a photo's decoding holds the loop
        return rows(value)

    inputs = await runner.submit(decode, tag=batcher)
    return await batcher.submit(inputs, deadline=far())


async def test_on_the_loop_a_batch_waits_for_the_photos_still_decoding(
    executor: ThreadPoolExecutor,
) -> None:
    """Eager batching on the loop closes a batch once every queued photo has joined it (or it
    is full), not after the first: the batch is whatever arrived while the last one ran."""
    servable = Recorder()
    threads: list[int] = []
    original = servable.predict

    def recording(inputs: Tensors, **kw: object) -> Tensors:
        threads.append(threading.get_ident())
        return original(inputs, **kw)  # type: ignore[arg-type]

    servable.predict = recording  # type: ignore[method-assign]
    runner = LoopRunner()
    batcher = Batcher(servable, BatchingOptions(max_batch_size=4, batch_timeout_micros=LONG),
                      executor, runner=runner)
    outs = await asyncio.gather(*(_decoded_then_batched(runner, batcher, v)
                                  for v in range(10)))
    assert servable.sizes == [4, 4, 2]
    assert set(threads) == {threading.get_ident()}  # every batch ran on the loop thread
    for v, out in enumerate(outs):
        assert out["y"].tolist() == [[v * 10.0] * 2]
    # Then a lone request runs at once, alone.
    out = await _decoded_then_batched(runner, batcher, 7)
    assert servable.sizes[-1] == 1 and out["y"].tolist() == [[70.0, 70.0]]


async def test_on_the_loop_the_timeout_does_not_cut_a_batch_while_photos_decode(
    executor: ThreadPoolExecutor,
) -> None:
    """Decoding 6 photos takes 60 ms, far past a 1 ms batch timeout: they still run as one
    batch. A request whose photo fails to decode never joins, and does not strand the batch
    that waited for it (the timeout closes it once nothing is left to decode)."""
    servable = Recorder()
    runner = LoopRunner()
    batcher = Batcher(servable, BatchingOptions(max_batch_size=32, batch_timeout_micros=1000),
                      executor, runner=runner)
    outs = await asyncio.gather(*(_decoded_then_batched(runner, batcher, v, 0.01)
                                  for v in range(6)))
    assert servable.sizes == [6]
    assert [o["y"][0, 0] for o in outs] == [v * 10.0 for v in range(6)]

    def broken() -> Tensors:
        time.sleep(0.01)
        raise InvalidArgument("image 0: cannot identify image file")

    good = asyncio.ensure_future(_decoded_then_batched(runner, batcher, 1))
    await asyncio.sleep(0)
    bad = runner.submit(broken, tag=batcher)  # queued behind the good photo's decode
    with pytest.raises(InvalidArgument):
        await asyncio.wait_for(bad, 5)
    out = await asyncio.wait_for(good, 5)
    assert out["y"].tolist() == [[10.0, 10.0]] and servable.sizes[-1] == 1


async def test_on_the_loop_a_batch_does_not_wait_for_other_models_photos(
    executor: ThreadPoolExecutor,
) -> None:
    """Only the photos of this batcher's requests hold its batch open: a backlog of another
    model's photos (untagged jobs here) does not delay it."""
    servable = Recorder()
    runner = LoopRunner()
    batcher = Batcher(servable, BatchingOptions(max_batch_size=32, batch_timeout_micros=LONG),
                      executor, runner=runner)
    mine = asyncio.ensure_future(_decoded_then_batched(runner, batcher, 3))
    await asyncio.sleep(0)
    others = [runner.submit(time.sleep, 0.02) for _ in range(20)]  # 0.4 s of other work
    out = await asyncio.wait_for(mine, 5)
    assert out["y"].tolist() == [[30.0, 30.0]] and servable.sizes == [1]
    # It did not wait for the backlog: only the jobs that the loop ran between the hops of its
    # own request (one job per loop iteration) went first.
    assert sum(f.done() for f in others) <= 6
    await asyncio.gather(*others)


async def test_closed_batcher_refuses(executor: ThreadPoolExecutor) -> None:
    servable = Recorder()
    b = Batcher(
        servable,
        BatchingOptions(max_batch_size=8, batch_timeout_micros=LONG, eager=False),
        executor,
    )
    pending = b.submit(rows(1), deadline=far())
    b.close()  # open batches still run
    assert (await asyncio.wait_for(pending, 10))["y"][0, 0] == 10
    with pytest.raises(Unavailable):
        b.submit(rows(2), deadline=far())


# ---- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "must be >= 1"),
        ({"num_batch_threads": 0}, "must be >= 1"),
        ({"max_enqueued_batches": 0}, "max_enqueued_batches"),
        ({"batch_timeout_micros": -1}, "batch_timeout_micros"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (4, 2, 8)}, "increase strictly"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (2, 4)}, "must equal max_batch_size"),
    ],
)
def test_options_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        BatchingOptions(**kwargs)  # type: ignore[arg-type]


def test_parse_batching_parameters() -> None:
    opts = parse_batching_parameters("""
        max_batch_size { value: 16 }
        batch_timeout_micros { value: 1000 }
        max_enqueued_batches { value: 3 }
        num_batch_threads { value: 2 }
        allowed_batch_sizes: 4
        allowed_batch_sizes: 16
        pad_variable_length_inputs: true
    """)
    assert opts == BatchingOptions(
        max_batch_size=16,
        batch_timeout_micros=1000,
        max_enqueued_batches=3,
        num_batch_threads=2,
        allowed_batch_sizes=(4, 16),
        pad_variable_length_inputs=True,
        eager=False,
    )
    defaults = parse_batching_parameters("")
    assert defaults.max_batch_size == BatchingOptions().max_batch_size and not defaults.eager
    with pytest.raises(InvalidArgument, match="batching parameters"):
        parse_batching_parameters("max_batch_size: {")
    with pytest.raises(InvalidArgument, match="must equal max_batch_size"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4")
