"""The coalescing writer: one transport write per event-loop iteration, order kept."""

from __future__ import annotations

import asyncio
from typing import Any

from corolla.http.coalesce import CoalescingWriter, DueWrites


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.extra = {"peername": ("127.0.0.1", 1)}

    def write(self, data: Any) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


def test_writes_in_one_callback_leave_as_one_buffer() -> None:
    async def main() -> list[bytes]:
        t = RecordingTransport()
        w = CoalescingWriter(t, asyncio.get_running_loop(), DueWrites())
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        w.write(b"")
        w.write(b"{}")
        assert t.writes == []  # nothing yet: the flush runs after this callback
        assert w.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await asyncio.sleep(0)
        w.write(b"next")
        await asyncio.sleep(0)
        return t.writes

    assert asyncio.run(main()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"next"]


def test_large_pending_output_is_written_at_once() -> None:
    async def main() -> None:
        t = RecordingTransport()
        w = CoalescingWriter(t, asyncio.get_running_loop(), DueWrites(), flush_bytes=10)
        w.write(b"head ")
        w.write(b"a body past the threshold")
        assert t.writes == [b"head a body past the threshold"]
        await asyncio.sleep(0)
        assert len(t.writes) == 1

    asyncio.run(main())


def test_close_flushes_first_and_later_writes_are_dropped() -> None:
    async def main() -> None:
        t = RecordingTransport()
        w = CoalescingWriter(t, asyncio.get_running_loop(), DueWrites())
        w.write(b"408 answer")
        w.close()
        assert t.writes == [b"408 answer"] and t.closed and w.is_closing()
        w.write(b"too late")
        await asyncio.sleep(0)
        assert t.writes == [b"408 answer"]
        assert w.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is delegated

    asyncio.run(main())


def test_flush_due_writes_out_what_every_connection_holds() -> None:
    """Before a job holds the loop (corolla.looprunner), answers written earlier in the same
    iteration leave at once instead of after the job."""
    due = DueWrites()  # the server's

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = RecordingTransport(), RecordingTransport()
        wa, wb = CoalescingWriter(a, loop, due), CoalescingWriter(b, loop, due)
        wa.write(b"answer a")
        wb.write(b"answer b")
        assert a.writes == [] and b.writes == []
        due.flush()
        assert a.writes == [b"answer a"] and b.writes == [b"answer b"]
        await asyncio.sleep(0)  # the scheduled flushes find nothing more to write
        assert a.writes == [b"answer a"] and b.writes == [b"answer b"]
        wa.write(b"next")
        await asyncio.sleep(0)
        assert a.writes == [b"answer a", b"next"]

    asyncio.run(main())
    due.flush()  # nothing left: nothing to do
