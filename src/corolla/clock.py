"""The clock that request deadlines and batch timeouts are measured on.

Deadlines are ``time.monotonic()`` values (the event loop's clock: asyncio's ``loop.time()``
is the same). Code that waits on time takes a :class:`Clock` so that tests can drive time by
hand instead of sleeping and asserting on wall time (tests/support/clocks.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on the deadline clock (``time.monotonic()``)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: object
                   ) -> Timer:
        """Run ``callback(*args)`` on the event loop ``delay`` seconds from now."""
        ...


class LoopClock:
    """The real clock: time.monotonic() and the running event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[..., object], *args: object
                   ) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback, *args)


LOOP_CLOCK = LoopClock()  # stateless: one is enough
