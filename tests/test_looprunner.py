"""LoopRunner: blocking jobs on the event loop, one per iteration, in order."""

from __future__ import annotations

import asyncio
import socket

import pytest

from corolla.looprunner import LoopRunner


async def test_jobs_run_in_order_with_inference_first_and_results_come_back() -> None:
    order: list[str] = []
    runner = LoopRunner()

    def job(name: str) -> str:
        order.append(name)
        return name.upper()

    decode = [runner.submit(job, f"decode{i}") for i in range(3)]
    infer = runner.submit(job, "infer", urgent=True)
    assert len(runner) == 4
    assert await asyncio.gather(*decode, infer) == ["DECODE0", "DECODE1", "DECODE2", "INFER"]
    assert order == ["infer", "decode0", "decode1", "decode2"]
    assert len(runner) == 0


async def test_the_loop_polls_its_sockets_between_jobs() -> None:
    """Data that arrives while a job runs is read before the job after next (at the latest):
    the runner never runs its whole queue back to back."""
    loop = asyncio.get_running_loop()
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    events: list[str] = []

    def on_read() -> None:
        reader.recv(16)
        events.append("read")

    loop.add_reader(reader.fileno(), on_read)
    runner = LoopRunner()

    def job(i: int) -> None:
        events.append(f"job{i}")
        if i == 0:
            writer.send(b"x")

    try:
        await asyncio.gather(*(runner.submit(job, i) for i in range(4)))
    finally:
        loop.remove_reader(reader.fileno())
        reader.close()
        writer.close()
    assert events.index("read") < events.index("job2"), events


async def test_a_cancelled_job_is_skipped_and_errors_reach_the_caller() -> None:
    ran: list[int] = []
    runner = LoopRunner()

    def job(i: int) -> int:
        ran.append(i)
        if i == 2:
            raise ValueError("bad photo")
        return i

    first = runner.submit(job, 0)
    gone = runner.submit(job, 1)
    failing = runner.submit(job, 2)
    gone.cancel()
    assert await first == 0
    with pytest.raises(ValueError, match="bad photo"):
        await failing
    assert ran == [0, 2]


async def test_before_job_runs_before_every_job() -> None:
    calls: list[str] = []
    runner = LoopRunner(before_job=lambda: calls.append("flush"))
    await asyncio.gather(*(runner.submit(calls.append, f"job{i}") for i in range(2)))
    assert calls == ["flush", "job0", "flush", "job1"]


def test_a_runner_moves_to_a_new_loop() -> None:
    runner = LoopRunner()

    async def once(x: int) -> int:
        return int(await runner.submit(lambda: x * 2))

    assert asyncio.run(once(1)) == 2
    assert asyncio.run(once(2)) == 4


async def test_a_stream_of_inference_jobs_cannot_starve_decoding() -> None:
    from corolla.looprunner import URGENT_STREAK

    order: list[str] = []
    runner = LoopRunner()
    decode = runner.submit(order.append, "decode")
    infer = [runner.submit(order.append, f"infer{i}", urgent=True) for i in range(10)]
    await asyncio.gather(decode, *infer)
    assert order.index("decode") == URGENT_STREAK


async def test_a_failing_before_job_strands_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise OSError("socket gone")

    runner = LoopRunner(before_job=broken)
    results = await asyncio.wait_for(
        asyncio.gather(*(runner.submit(lambda i=i: i * 10) for i in range(3))), 5)
    assert results == [0, 10, 20]
    assert "before_job failed" in caplog.text
