"""Memory-aware admission: a per-process budget for the memory that requests hold in flight.

What a client sends, and what it decodes to, costs memory before any model runs: request bodies,
the Python objects of a parsed JSON body, decoded pixels, tensors. Without a bound, a few
concurrent requests that are each within the body limit can take a container past its memory
limit (measured at 288fb0a: eight concurrent 20 MB TF Serving JSON bodies killed a container
with a 2 GiB limit). Every such allocation first takes its bytes from the process's
:class:`MemoryBudget`, through the request's :class:`Ledger`, and gives them back when the
request ends. A request whose bytes do not fit waits (first come, first served) up to
``wait_seconds``, then is refused :class:`MemoryBusy`: 503 with ``Retry-After`` on REST,
UNAVAILABLE on gRPC (Triton's answer to a full queue, and the code gRPC clients retry). A
request that needs more than the whole budget can never fit: :class:`TooLargeForBudget`, 413.

The budget counts client-controlled memory only; the process's own (Python, the runtimes, the
loaded models, a running batch's working memory) comes on top. Its default is derived from the
cgroup memory limit (:func:`cgroup_memory_limit`, v2 ``memory.max`` or v1
``memory.limit_in_bytes``): :data:`DEFAULT_BUDGET_FRACTION` of it, shared among the processes
that serve (``--rest_workers``). Without a limit there is no default budget (off).

Each request's :class:`Ledger` is found through :data:`CURRENT` (a ContextVar: the REST
middleware and the gRPC error wrapper set it for the request's task), so the codecs and the
service take bytes where they allocate without threading a parameter through every call.
Event-loop only: the budget and ledgers are used from the loop's thread, never from workers.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from corolla.errors import Code, CorollaError

if TYPE_CHECKING:
    import argparse

    import numpy as np

log = logging.getLogger("corolla.admission")

T = TypeVar("T")

# Default budget: this fraction of the cgroup memory limit, divided among the serving processes.
# The rest is the processes' own memory: Python, ONNX Runtime and its arenas, the models, and a
# batch's working memory (EfficientNet-Lite0: about 17 MB per row).
DEFAULT_BUDGET_FRACTION = 0.5
# A request that does not fit waits this long at most (less when its deadline is sooner).
DEFAULT_WAIT_SECONDS = 2.0
# Retry-After (seconds) on a 503 for memory.
RETRY_AFTER_SECONDS = 1
# Parsing a JSON body (orjson's document and Python objects, then numpy arrays from them) peaks
# at up to this many times the body's size, in resident memory: 13-14x for pixel values as
# numbers, 22-23x for zeros, strings and b64 objects, 35-39x for bodies of tiny tokens such as
# ``[], ...`` or ``[[0]], ...`` (benchmarks/json_parse_memory.py). A JSON body takes this much
# of the budget with its own bytes, before it is read, until its tensors exist; at most half
# the budget, so that one big body always fits beside the others that wait.
JSON_PEAK_FACTOR = 40
# cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages); anything above this is
# no limit.
_NO_LIMIT = 1 << 60


class MemoryBusy(CorollaError):
    """The budget stayed full for the whole wait: 503 with Retry-After, gRPC UNAVAILABLE."""

    code = Code.UNAVAILABLE
    retry_after = RETRY_AFTER_SECONDS


class TooLargeForBudget(CorollaError):
    """More than the whole budget: it can never fit (413, gRPC RESOURCE_EXHAUSTED)."""

    code = Code.RESOURCE_EXHAUSTED

    @property
    def http_status(self) -> int:
        return 413


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup"),
                        proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """This process's cgroup memory limit in bytes, or None when there is none (or no cgroup).

    cgroup v2: ``memory.max`` of the process's cgroup (``0::/path`` in /proc/self/cgroup), and
    of each parent up to the root (a container sees its own cgroup as ``/``); v1: the memory
    controller's ``memory.limit_in_bytes``, likewise. The lowest limit found applies."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    v2_path, v1_path = None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    found: list[int] = []
    if v2_path is not None:
        found += _walk(root, v2_path, "memory.max")
    if v1_path is not None:
        found += _walk(root / "memory", v1_path, "memory.limit_in_bytes")
    if not found:  # no /proc/self/cgroup entry: a container's own root
        found += _walk(root, "/", "memory.max") + _walk(root / "memory", "/",
                                                          "memory.limit_in_bytes")
    limits = [n for n in found if 0 < n < _NO_LIMIT]
    return min(limits) if limits else None


def _walk(base: Path, path: str, name: str) -> list[int]:
    """The values of ``name`` in ``base/path`` and in each of its parents under ``base``."""
    out: list[int] = []
    current = Path("/") / path.lstrip("/")
    while True:
        value = _read_limit(base / str(current).lstrip("/") / name)
        if value is not None:
            out.append(value)
        if current == current.parent:
            return out
        current = current.parent


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def add_flags(group: argparse._ArgumentGroup) -> None:
    """``corolla serve``'s flags for what requests may allocate."""
    group.add_argument("--max_decoded_image_mib", type=int, default=256,
                       help="encoded images in one request may decode to at most this many MiB "
                            "of model input; beyond, 400 before any is decoded (default 256). "
                            "Also bounds what a request's tensors may expand to beyond the "
                            "bytes sent (TF's padding of a short typed field)")
    group.add_argument(
        "--memory_budget_mib", type=int, default=-1,
        help="memory that requests may hold in flight per serving process (bodies, parsed "
             "JSON, decoded pixels, tensors); a request that does not fit waits up to 2 s, then "
             "gets 503 with Retry-After (gRPC UNAVAILABLE). Default: half the container's cgroup "
             "memory limit, divided among the --rest_workers processes (no limit: off); 0: off")


def budget_from_flags(args: argparse.Namespace, processes: int) -> int:
    """--memory_budget_mib in bytes; left out: derived from the cgroup memory limit."""
    mib = args.memory_budget_mib
    if mib < -1:
        raise CorollaError("--memory_budget_mib must be 0 (off), a number of MiB, or left out")
    if mib >= 0:
        return int(mib) << 20
    return default_budget_bytes(cgroup_memory_limit(), processes)


def default_budget_bytes(limit: int | None, processes: int) -> int:
    """The default budget per process for a memory limit (0: off, when there is no limit)."""
    if limit is None:
        return 0
    return max(64 << 20, int(limit * DEFAULT_BUDGET_FRACTION) // max(1, processes))


@dataclass
class BudgetStats:
    """Counters for metrics: bytes in use, waits, refusals (busy and too large)."""

    in_use: int = 0
    peak: int = 0
    waits: int = 0
    busy: int = 0
    too_large: int = 0


class MemoryBudget:
    """Bytes that requests may hold at once in this process (see the module docstring)."""

    def __init__(self, limit_bytes: int, *, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        if limit_bytes <= 0:
            raise ValueError("a memory budget needs a positive limit")
        self.limit = limit_bytes
        self.wait_seconds = wait_seconds
        self.stats = BudgetStats()
        # Waiters in arrival order: (bytes, future). The first one that does not fit blocks
        # the ones behind it, so a big request is not starved by a stream of small ones.
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque())

    @property
    def in_use(self) -> int:
        return self.stats.in_use

    def _grant(self, nbytes: int) -> None:
        stats = self.stats
        stats.in_use += nbytes
        if stats.in_use > stats.peak:
            stats.peak = stats.in_use

    async def take(self, nbytes: int, what: str, deadline: float | None = None, *,
                   kept: int = 0) -> None:
        """Take ``nbytes``, waiting for them if need be (see the module docstring). ``kept``:
        bytes the same request already holds and keeps while it waits; beside them, more than
        the whole budget can never be granted (413 at once, not a wait and a 503 that a retry
        would meet again)."""
        if nbytes <= 0:
            return
        if nbytes + max(0, kept) > self.limit:
            self.stats.too_large += 1
            beside = f" beside the {_mib(kept)} that this request holds" if kept > 0 else ""
            raise TooLargeForBudget(
                f"{what} needs {_mib(nbytes)} of memory{beside}, more than this server's memory "
                f"budget for requests in flight ({_mib(self.limit)}); send it in smaller "
                f"requests")
        if not self._waiters and self.stats.in_use + nbytes <= self.limit:
            self._grant(nbytes)
            return
        wait = self.wait_seconds
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        self.stats.waits += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (nbytes, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), max(0.0, wait))
        except TimeoutError:
            if fut.done():  # granted as the wait expired: keep it
                return
            self._waiters.remove(entry)
            fut.cancel()
            self._wake()  # the ones behind it may fit now
            self.stats.busy += 1
            raise MemoryBusy(
                f"the server is busy: {what} needs {_mib(nbytes)} of memory and "
                f"{_mib(self.stats.in_use)} of the {_mib(self.limit)} budget for requests in "
                f"flight is in use; retry later") from None
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.give(nbytes)  # granted, but the caller is gone (cancelled)
            elif entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()
            raise

    def give(self, nbytes: int) -> None:
        """Give back bytes taken earlier."""
        if nbytes <= 0:
            return
        self.stats.in_use -= nbytes
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            nbytes, fut = waiters[0]
            if self.stats.in_use + nbytes > self.limit:
                return
            waiters.popleft()
            self._grant(nbytes)
            fut.set_result(None)


class Ledger:
    """The bytes one request holds; everything is given back by :meth:`close`. ``parsing``:
    the part held for parsing its JSON body (:func:`parsing`, :func:`parsed`)."""

    __slots__ = ("budget", "deadline", "held", "parsing")

    def __init__(self, budget: MemoryBudget, deadline: float | None = None) -> None:
        self.budget = budget
        self.deadline = deadline
        self.held = 0
        self.parsing = 0

    async def take(self, nbytes: int, what: str, *, keeps_held: bool = True) -> None:
        """Take ``nbytes`` for this request. ``keeps_held``: the request keeps what it holds
        while it waits (a body read chunk by chunk, the parse of a body it holds), so what does
        not fit beside that is refused at once (413); False where part of what it holds is
        given back meanwhile (its images decoding side by side)."""
        await self.budget.take(nbytes, what, self.deadline,
                               kept=self.held if keeps_held else 0)
        self.held += max(0, nbytes)

    def give(self, nbytes: int) -> None:
        """Give back part of what the request holds (never more than it holds)."""
        nbytes = min(max(0, nbytes), self.held)
        self.held -= nbytes
        self.budget.give(nbytes)

    def close(self) -> None:
        self.give(self.held)


# The ledger of the request running in this context (None: no budget, or not in a request).
CURRENT: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar(
    "corolla_memory_ledger", default=None)


async def reserve(nbytes: int, what: str) -> int:
    """Take ``nbytes`` for the current request; returns what was taken (0 without a budget),
    for :func:`release`."""
    ledger = CURRENT.get()
    if ledger is None or nbytes <= 0:
        return 0
    await ledger.take(nbytes, what)
    return nbytes


def room() -> int | None:
    """What the current request may still take beside what it holds (None: no budget)."""
    ledger = CURRENT.get()
    return None if ledger is None else max(0, ledger.budget.limit - ledger.held)


def too_large(what: str) -> TooLargeForBudget:
    """``what`` turned out to need more than the current request may hold beside what it
    holds (counted as too_large)."""
    ledger = CURRENT.get()
    limit = 0
    if ledger is not None:
        ledger.budget.stats.too_large += 1
        limit = ledger.budget.limit
    return TooLargeForBudget(
        f"{what} needs more memory than this server's memory budget for requests in flight "
        f"({_mib(limit)}); send it in smaller requests")


def release(nbytes: int) -> None:
    """Give back part of the current request's bytes before the request ends."""
    ledger = CURRENT.get()
    if ledger is not None and nbytes > 0:
        ledger.give(nbytes)


def parse_allowance(budget: MemoryBudget, body_bytes: int) -> int:
    """What parsing a JSON body of ``body_bytes`` takes from ``budget`` (see JSON_PEAK_FACTOR)."""
    return min(JSON_PEAK_FACTOR * body_bytes, budget.limit // 2)


async def parsing(body_bytes: int) -> None:
    """Before parsing a JSON body: the current request holds its parse allowance (taken with
    the body's bytes when its length was known in advance; topped up for an inflated body)."""
    ledger = CURRENT.get()
    if ledger is None:
        return
    need = parse_allowance(ledger.budget, body_bytes) - ledger.parsing
    if need > 0:
        await ledger.take(need, f"parsing a JSON body of {body_bytes} bytes")
        ledger.parsing += need


def parsed(keep: int = 0) -> None:
    """After parsing (the Python objects are gone): give back the parse allowance but ``keep``
    bytes (the tensors made from it)."""
    ledger = CURRENT.get()
    if ledger is None or not ledger.parsing:
        return
    back = max(0, ledger.parsing - max(0, keep))
    ledger.parsing = 0
    ledger.give(back)


def metered(ledger: Ledger, submit: Callable[[int, Any], Awaitable[T]],
            cost: Callable[[bytes | bytearray | memoryview], int]
            ) -> Callable[[int, Any], Awaitable[T]]:
    """``submit(i, data)`` (an image's decode) that first takes ``cost(data)`` bytes from the
    request's ledger and gives them back when it is done."""

    async def run(i: int, data: Any) -> T:
        n = cost(data) if isinstance(data, bytes | bytearray | memoryview) else 0
        await ledger.take(n, f"decoding image {i}", keeps_held=False)
        try:
            return await submit(i, data)
        finally:
            ledger.give(n)

    return run


def owned_bytes(arrays: Iterable[np.ndarray]) -> int:
    """About the bytes that arrays made from a request hold beyond its body: numeric arrays
    that own their data (views of the body cost nothing more), and for object arrays a pointer
    and a small ``bytes`` object per element (their contents are counted with the body)."""
    total = 0
    for a in arrays:
        if a.dtype == object:
            total += int(a.size) * 41
        elif a.base is None:
            total += int(a.nbytes)
    return total


def active() -> bool:
    """Whether the current request counts its memory (so estimates are worth computing)."""
    return CURRENT.get() is not None


def _mib(nbytes: int) -> str:
    return f"{math.ceil(nbytes / (1 << 20))} MiB"
