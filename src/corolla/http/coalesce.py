"""One socket write per response: the response head and body leave together.

uvicorn's httptools protocol writes a response's status line and headers as soon as the app
sends ``http.response.start`` and its body on ``http.response.body``: two ``send`` system calls,
two TCP segments and two wake-ups of the client for every answer. On small responses those
writes were a fifth of the server's CPU per request (benchmarks/PROFILE.md, tiny model).

:class:`CoalescingWriter` stands in for the transport of a request/response cycle. It collects
what the cycle writes and hands it to the real transport as one buffer at the end of the
current event-loop iteration (``call_soon``), or at once when the pending bytes reach
``flush_bytes`` (so a large or streamed body is never held back in memory), or when the cycle
closes the connection. Bytes keep their order, nothing is delayed past the callback that wrote
it, and a write after the connection is gone is dropped, as the transport itself would.

:class:`DueWrites` (one per server, owned by it: its connections all run on its event loop)
knows the writers with bytes waiting; :meth:`DueWrites.flush` writes them out. Code that is
about to hold the loop for a while (a request run on the loop, corolla.looprunner) calls it
first, so that answers finished earlier in the same iteration leave now rather than after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


class DueWrites:
    """The writers of one server's connections that hold bytes for the end of the current
    loop iteration (event loop thread only)."""

    __slots__ = ("_writers",)

    def __init__(self) -> None:
        self._writers: set[CoalescingWriter] = set()

    def add(self, writer: CoalescingWriter) -> None:
        self._writers.add(writer)

    def discard(self, writer: CoalescingWriter) -> None:
        self._writers.discard(writer)

    def flush(self) -> None:
        """Write out now what every connection has waiting."""
        if self._writers:
            for w in list(self._writers):
                w.flush()
            self._writers.clear()


class CoalescingWriter:
    __slots__ = ("_due", "_loop", "_pending", "_scheduled", "_size", "_transport", "flush_bytes")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        due: DueWrites,
        *,
        flush_bytes: int = 256 * 1024,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._due = due
        self._pending: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self.flush_bytes = flush_bytes

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._pending.append(data)
        self._size += len(data)
        if self._size >= self.flush_bytes:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._scheduled_flush)
            self._due.add(self)

    def writelines(self, lines: Iterable[bytes]) -> None:
        for data in lines:
            self.write(data)

    def _scheduled_flush(self) -> None:
        self._scheduled = False
        self._due.discard(self)
        self.flush()

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._size = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, ...
        return getattr(self._transport, name)
