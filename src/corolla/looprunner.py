"""Run blocking jobs on the event loop itself, one per loop iteration, in arrival order.

Where a process has a single core (the cores divided by ``--rest_workers`` is 1, or a one-CPU
container), handing a photo's decoding and inference to worker threads buys no parallelism:
there is no other core to run them. It only costs hand-offs, GIL switches between three threads
and, with ONNX Runtime, a second thread pool. :class:`LoopRunner` runs those jobs on the loop
thread instead, with the queueing behaviour of a one-thread executor:

- jobs run in the order they were submitted, inference jobs before decoding jobs (a request
  whose photo is decoded finishes before new ones start), but never more than
  ``URGENT_STREAK`` inference jobs in a row while decoding jobs wait, so a stream of tensor
  requests cannot starve uploads;
- **one job per loop iteration**, so between two jobs the loop polls its sockets: the rest of a
  request body that arrived in several segments is read, new requests join the queue behind the
  ones already there, and health probes are answered. (An earlier version that ran every
  ready request's work back to back starved large uploads, which arrive in several segments:
  each segment waited for a whole round of other requests);
- a job whose future was cancelled (the caller's deadline passed, or it went away) is skipped;
- ``before_job`` runs before each job: the HTTP layer writes out the answers that it holds back
  for the end of the loop iteration (``corolla.http.coalesce.DueWrites.flush``), so a finished
  request's answer does not wait for the next job.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")

# (function, arguments, future, tag); the future is the caller's Future[T] for fn -> T.
_Job = tuple[Callable[..., object], tuple[object, ...], "asyncio.Future[object]", object]

log = logging.getLogger("corolla.looprunner")

URGENT_STREAK = 4


class LoopRunner:
    def __init__(self, before_job: Callable[[], None] | None = None) -> None:
        self.before_job = before_job
        self._urgent: deque[_Job] = deque()
        self._normal: deque[_Job] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._streak = 0  # urgent jobs run in a row

    def __len__(self) -> int:
        return len(self._urgent) + len(self._normal)

    def pending(self, tag: object) -> bool:
        """Whether a (not urgent) job submitted with ``tag`` still waits to run: a photo to
        decode whose request will then join that tag's batch."""
        return any(job[3] is tag and not job[2].done() for job in self._normal)

    def submit(self, fn: Callable[..., T], *args: object, urgent: bool = False,
               tag: object = None) -> asyncio.Future[T]:
        """Queue ``fn(*args)`` (from the loop thread); its result or exception comes back in
        the returned future."""
        loop = asyncio.get_running_loop()
        # First use, or a new loop: a service is served by one loop at a time, and the old loop
        # (a test's, or a server restarted in this process) is gone with its waiting callers.
        if loop is not self._loop:
            self._loop = loop
            self._urgent.clear()
            self._normal.clear()
            self._scheduled = False
        fut: asyncio.Future[T] = loop.create_future()
        job: _Job = (fn, args, cast("asyncio.Future[object]", fut), tag)
        (self._urgent if urgent else self._normal).append(job)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._step)
        return fut

    def _next(self) -> _Job | None:
        for queue in (self._urgent, self._normal):  # drop what nobody waits for any more
            while queue and queue[0][2].done():
                queue.popleft()
        if self._urgent and (self._streak < URGENT_STREAK or not self._normal):
            self._streak += 1
            return self._urgent.popleft()
        self._streak = 0
        return self._normal.popleft() if self._normal else None

    def _step(self) -> None:
        self._scheduled = False
        try:
            job = self._next()
            if job is None:
                return
            fn, args, fut, _ = job
            if self.before_job is not None:
                try:
                    self.before_job()
                except Exception:  # never strand the job or the queue behind it
                    log.exception("before_job failed")
            try:
                result = fn(*args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # handed to the caller, as an executor does
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        finally:
            if (self._urgent or self._normal) and self._loop is not None:
                self._scheduled = True
                self._loop.call_soon(self._step)
