"""The REST and gRPC listening sockets: where they bind, and how they stop without losing a
connection that the kernel has accepted.

Binding. REST binds ``--host``; gRPC binds ``--grpc_host``, which defaults to ``--host``
(:func:`grpc_address`): an operator who binds loopback gets loopback on both ports. ``0.0.0.0``
and ``::`` mean every interface; gRPC binds them as ``[::]`` (IPv4 and IPv6). With
``--rest_workers`` every process binds the same ports with ``SO_REUSEPORT``; the main process
first checks that nothing else listens there (:func:`in_use`). A REST socket is bound at once
(:func:`rest_socket`, so the port is known) but listens only when :class:`RestListener` serves
it, which the server does once the process's models have settled where processes share ports.

Stopping (:meth:`RestListener.drain`). Closing a listening socket resets the connections still
in its accept queue: their clients had connected, sent a request, and get a reset. So the drain
first stops the kernel from completing new handshakes, with a socket filter on the listening
socket that drops SYN segments (classic BPF, Linux; a client that connects then retries its SYN
and is refused once the socket closes), lets the event loop accept what is queued until the
queue is empty (``TCP_INFO``), and only then closes the socket. Connections accepted that way
are answered (corolla.http.limits: the first request of a connection that has not sent one yet
is still served, with ``Connection: close``). Where the filter cannot be attached, the drain
closes at once, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import socket
import struct
import time
from collections.abc import Generator

import uvicorn

log = logging.getLogger("corolla.server")

# cBPF for a listening TCP socket (its filter sees each segment from the TCP header on): drop a
# segment whose SYN flag is set and ACK is not (a new connection), keep everything else (the
# final ACK of a handshake under way, and the traffic of accepted connections, which inherit
# the filter).
_DROP_SYN = [
    (0x30, 0, 0, 13),          # ldb [13]          TCP flags
    (0x54, 0, 0, 0x12),        # and #(SYN|ACK)
    (0x15, 0, 1, 0x02),        # jeq #SYN, drop, keep
    (0x06, 0, 0, 0),           # drop: ret #0
    (0x06, 0, 0, 0xFFFFFFFF),  # keep: ret #-1
]  # fmt: skip
_SO_ATTACH_FILTER = 26
_TCP_INFO = 11
# A handshake under way when the filter goes on completes within a round trip; queued
# connections are accepted by the event loop within a turn. Wait at least this long.
DRAIN_SETTLE_SECONDS = 0.2
DRAIN_MAX_SECONDS = 5.0


class ListenError(Exception):
    """A listening port could not be opened (in use, or not allowed)."""


def in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` already, shared port or not.

    With ``--rest_workers`` the server's processes listen with SO_REUSEPORT, and so would a
    second Corolla started on the same ports: the kernel would then split connections between
    two unrelated servers. The main process tries the port first without SO_REUSEPORT, which
    fails wherever any socket listens on it ("::" also covers IPv4, falling back to 0.0.0.0
    where IPv6 is off). Port 0 is always free.
    """
    if port == 0:
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        probe = socket.socket(family)
    except OSError:
        if family != socket.AF_INET6:
            raise
        family, host, probe = socket.AF_INET, "0.0.0.0", socket.socket(socket.AF_INET)
    with probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        if family == socket.AF_INET6 and host == "::":
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def any_address(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def grpc_address(host: str, port: int) -> str:
    """grpcio's address for ``host``: every interface as ``[::]``, IPv6 in brackets."""
    if any_address(host):
        return f"[::]:{port}"
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def grpc_probe_host(host: str) -> str:
    """The host :func:`in_use` checks for a gRPC address."""
    return "::" if any_address(host) else host.strip("[]")


def rest_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """A socket bound to ``host:port`` (SO_REUSEPORT when ``shared``), not listening yet."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port} (REST API): "
                          f"{exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def refuse_new_connections(sock: socket.socket) -> bool:
    """Attach the SYN-dropping filter to a listening socket (False where that fails)."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in _DROP_SYN))
    prog = struct.pack("@HL", len(_DROP_SYN), ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, prog)
    except OSError as exc:
        log.warning("cannot filter new connections while draining (%s): the listener closes "
                    "at once", exc)
        return False
    return True


def accept_queue(sock: socket.socket) -> int | None:
    """Connections waiting in a listening socket's accept queue (Linux TCP_INFO), or None."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return None
    return int(struct.unpack_from("I", info, 24)[0])  # tcpi_unacked: the queue, for a listener


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: CorollaServer owns the shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class RestListener:
    """uvicorn serving one bound socket: :meth:`serve` listens, :meth:`drain` stops."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket) -> None:
        self.server = _Uvicorn(config)
        self.sock = sock
        self.task: asyncio.Task[None] | None = None

    def serve(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="rest")
        return self.task

    async def drain(self) -> None:
        """Stop taking connections without resetting any the kernel accepted, then let uvicorn
        finish the open ones (see the module docstring)."""
        if self.task is not None and self.server.started and refuse_new_connections(self.sock):
            start = time.monotonic()
            await asyncio.sleep(DRAIN_SETTLE_SECONDS)
            while (accept_queue(self.sock) or 0) > 0 and (
                    time.monotonic() - start < DRAIN_MAX_SECONDS):
                await asyncio.sleep(0.01)
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self.task
