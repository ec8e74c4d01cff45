"""The request memory budget (corolla.admission): grants, FIFO waits, refusals, ledgers, the
parse allowance, and the default derived from cgroup files."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from corolla import admission
from corolla.admission import (
    CURRENT,
    JSON_PEAK_FACTOR,
    Ledger,
    MemoryBudget,
    MemoryBusy,
    TooLargeForBudget,
    cgroup_memory_limit,
    default_budget_bytes,
)
from corolla.errors import Code

MiB = 1 << 20


async def test_grants_within_the_limit_at_once() -> None:
    budget = MemoryBudget(100)
    await budget.take(60, "a")
    await budget.take(40, "b")
    assert budget.in_use == 100 and budget.stats.peak == 100 and budget.stats.waits == 0
    budget.give(100)
    assert budget.in_use == 0


async def test_a_waiter_gets_its_bytes_when_they_are_given_back() -> None:
    budget = MemoryBudget(100, wait_seconds=5)
    await budget.take(80, "a")
    waiter = asyncio.ensure_future(budget.take(50, "b"))
    await asyncio.sleep(0)
    assert not waiter.done() and budget.stats.waits == 1
    budget.give(80)
    await asyncio.wait_for(waiter, 1)
    assert budget.in_use == 50


async def test_first_come_first_served() -> None:
    """A small request does not pass a big one that waits (no starvation)."""
    budget = MemoryBudget(100, wait_seconds=5)
    await budget.take(60, "a")
    big = asyncio.ensure_future(budget.take(90, "big"))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(budget.take(10, "small"))  # would fit, but big is first
    await asyncio.sleep(0)
    assert not small.done()
    budget.give(60)
    await asyncio.wait_for(big, 1)
    await asyncio.wait_for(small, 1)
    assert budget.in_use == 100


async def test_a_wait_that_expires_is_busy_and_lets_the_next_one_in() -> None:
    budget = MemoryBudget(100, wait_seconds=0.05)
    await budget.take(60, "a")
    big = asyncio.ensure_future(budget.take(90, "big"))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(budget.take(30, "small"))
    with pytest.raises(MemoryBusy) as err:
        await big
    assert err.value.code == Code.UNAVAILABLE and err.value.http_status == 503
    assert err.value.retry_after >= 1 and "retry later" in err.value.message
    await asyncio.wait_for(small, 1)  # woken when the big one gave up
    assert budget.in_use == 90 and budget.stats.busy == 1


async def test_more_than_the_whole_budget_is_refused_at_once() -> None:
    budget = MemoryBudget(100)
    with pytest.raises(TooLargeForBudget) as err:
        await budget.take(101, "a big request")
    assert err.value.http_status == 413 and err.value.code == Code.RESOURCE_EXHAUSTED
    assert budget.stats.too_large == 1 and budget.in_use == 0


async def test_more_than_the_budget_beside_what_the_request_holds_is_refused_at_once() -> None:
    # A body read chunk by chunk (or parsed, or inflated) keeps its bytes while it waits: once
    # the rest cannot fit beside them, waiting cannot help and a 503 would only be retried into
    # the same wall. Found from outside: a 20 MB chunked body under a 16 MiB budget got 503.
    budget = MemoryBudget(100, wait_seconds=60)
    ledger = Ledger(budget)
    await ledger.take(70, "a request body")
    t0 = time.monotonic()
    with pytest.raises(TooLargeForBudget) as err:
        await ledger.take(40, "a request body")
    assert time.monotonic() - t0 < 5  # no wait
    assert "beside the 1 MiB that this request holds" in err.value.message
    assert budget.stats.too_large == 1 and budget.stats.busy == 0
    ledger.close()
    assert budget.in_use == 0


async def test_a_take_beside_bytes_given_back_meanwhile_waits_for_them() -> None:
    # An image decoding beside its siblings: what they hold is given back when they finish.
    budget = MemoryBudget(100, wait_seconds=5)
    ledger = Ledger(budget)
    await ledger.take(70, "decoding image 0", keeps_held=False)
    waiter = asyncio.create_task(ledger.take(40, "decoding image 1", keeps_held=False))
    await asyncio.sleep(0)
    assert not waiter.done()
    ledger.give(70)
    await waiter
    assert budget.in_use == 40 == ledger.held


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    budget = MemoryBudget(100, wait_seconds=5)
    await budget.take(100, "a")
    waiter = asyncio.ensure_future(budget.take(50, "b"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.give(100)
    assert budget.in_use == 0
    await budget.take(100, "c")  # nobody is left in the queue


async def test_the_deadline_shortens_the_wait() -> None:
    budget = MemoryBudget(100, wait_seconds=60)
    await budget.take(100, "a")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(MemoryBusy):
        await Ledger(budget, deadline=time.monotonic() + 0.05).take(10, "b")
    assert loop.time() - t0 < 5


async def test_a_ledger_gives_everything_back() -> None:
    budget = MemoryBudget(100)
    ledger = Ledger(budget)
    await ledger.take(30, "a")
    await ledger.take(20, "b")
    ledger.give(10)
    ledger.give(1000)  # never more than it holds
    assert budget.in_use == 0
    await ledger.take(40, "c")
    ledger.close()
    assert budget.in_use == 0 and ledger.held == 0


async def test_parse_allowance_through_the_current_ledger() -> None:
    budget = MemoryBudget(1000 * MiB)
    ledger = Ledger(budget)
    token = CURRENT.set(ledger)
    try:
        await admission.parsing(1 * MiB)
        assert ledger.parsing == JSON_PEAK_FACTOR * MiB == budget.in_use
        await admission.parsing(100 * MiB)  # at most half the budget
        assert ledger.parsing == 500 * MiB
        arrays = [np.zeros(1000, np.float32), np.zeros(10, np.float32)[2:]]  # a view: free
        admission.parsed(keep=admission.owned_bytes(arrays))
        assert ledger.parsing == 0 and budget.in_use == 4000
    finally:
        CURRENT.reset(token)
    assert await admission.reserve(10, "x") == 0  # no ledger: nothing counted


# ---- the default budget from cgroup files -----------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_of_the_process_s_cgroup_and_its_parents(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tmp_path / "cgroup"
    _write(proc, "0::/kubepods/pod1/ctr\n")
    _write(root / "kubepods/pod1/ctr/memory.max", "max\n")
    _write(root / "kubepods/pod1/memory.max", f"{2 << 30}\n")
    _write(root / "kubepods/memory.max", f"{8 << 30}\n")
    assert cgroup_memory_limit(root, proc) == 2 << 30


def test_cgroup_v2_inside_a_container_sees_its_own_root(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tmp_path / "cgroup"
    _write(proc, "0::/\n")
    _write(root / "memory.max", f"{1 << 30}\n")
    assert cgroup_memory_limit(root, proc) == 1 << 30


def test_cgroup_v1(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tmp_path / "cgroup"
    _write(proc, "12:cpu,cpuacct:/x\n4:memory:/docker/abc\n0::/\n")
    _write(root / "memory/docker/abc/memory.limit_in_bytes", f"{512 << 20}\n")
    _write(root / "memory/memory.limit_in_bytes", "9223372036854771712\n")  # no limit
    assert cgroup_memory_limit(root, proc) == 512 << 20


def test_no_limit_anywhere(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tmp_path / "cgroup"
    _write(proc, "0::/user.slice\n")
    _write(root / "user.slice/memory.max", "max\n")
    assert cgroup_memory_limit(root, proc) is None
    assert cgroup_memory_limit(tmp_path / "none", tmp_path / "missing") is None


def test_default_budget() -> None:
    assert default_budget_bytes(None, 1) == 0  # off without a limit
    assert default_budget_bytes(2 << 30, 1) == 1 << 30
    assert default_budget_bytes(4 << 30, 2) == 1 << 30
    assert default_budget_bytes(100 << 20, 4) == 64 << 20  # a floor
