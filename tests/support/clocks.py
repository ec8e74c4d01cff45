"""A clock that tests move by hand (corolla.clock.Clock): no sleeps, no wall-time asserts."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable


class ManualTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Starts at the real monotonic time (deadlines made with time.monotonic() still mean
    something) and moves only in :meth:`advance`, which runs the timers that fall due, in
    order, on the caller's thread (the event loop's, in async tests)."""

    def __init__(self) -> None:
        self.t = time.monotonic()
        self._timers: list[tuple[float, int, ManualTimer, Callable[..., object],
                                 tuple[object, ...]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    def call_later(self, delay: float, callback: Callable[..., object], *args: object
                   ) -> ManualTimer:
        timer = ManualTimer()
        heapq.heappush(self._timers, (self.t + delay, next(self._order), timer, callback, args))
        return timer

    def pending(self) -> int:
        """Timers not yet run nor cancelled."""
        return sum(1 for *_, timer, _, _ in self._timers if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        end = self.t + seconds
        # A nanosecond of slack: 0.2 + 0.2 must reach a timer set 0.4 ahead despite rounding.
        while self._timers and self._timers[0][0] <= end + 1e-9:
            when, _, timer, callback, args = heapq.heappop(self._timers)
            self.t = max(self.t, when)
            if not timer.cancelled:
                callback(*args)
        self.t = end
