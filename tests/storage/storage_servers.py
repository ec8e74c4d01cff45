"""Real store servers for the storage tests, each on a free loopback port.

- :func:`moto_s3`: moto's S3 server (``moto[server]``), a subprocess;
- :func:`gcs_emulator`: ``gcp-storage-emulator``, a subprocess;
- :func:`redis_server`: Debian's ``redis-server`` (no persistence), a subprocess;
- :class:`HttpFiles`: a stdlib HTTP server for archives, in a thread;
- :class:`Outage`: a TCP relay in front of any of them that can stop and start again on the same
  port (the store "goes away" for its clients, then comes back with its data).

No mocks: the clients talk to these over TCP exactly as they would to the real services.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from corolla_harness import corolla_process, free_port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args} did not listen on {port}")


@contextlib.contextmanager
def _process(cmd: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def moto_s3(workdir: Path) -> Iterator[str]:
    port = free_port()
    with _process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                  port, workdir / "moto.log"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def gcs_emulator(workdir: Path) -> Iterator[str]:
    port = free_port()
    code = ("import sys; from gcp_storage_emulator.server import create_server; "
            "s = create_server('127.0.0.1', int(sys.argv[1]), in_memory=True); s.start(); "
            "import threading; threading.Event().wait()")
    with _process([sys.executable, "-c", code, str(port)], port, workdir / "gcs.log"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    port = free_port()
    with _process(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(workdir)], port, workdir / "redis.log"):
        yield port


@contextlib.contextmanager
def memcached_server(workdir: Path) -> Iterator[int]:
    port = free_port()

    user = ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses root without -u
    with _process(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64",
                   *user], port, workdir / "memcached.log"):
        yield port


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class HttpFiles:
    """Serves a directory over HTTP/1.1 (ETag-less, Last-Modified + Content-Length)."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Outage:
    """A TCP relay 127.0.0.1:<port> -> 127.0.0.1:<target>; ``stop()`` closes the listener and
    every relayed connection (the store is gone), ``start()`` listens on the same port again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept() and stops the listening at once
            # (close() alone leaves the socket listening until that accept returns).
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


def needs(binary: str) -> None:
    import shutil

    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed (.ci/run installs it with apt-get)")


@contextlib.contextmanager
def serve(args: list[str], workdir: Path) -> Iterator[tuple[str, Path]]:
    """``corolla serve`` as a real process on free loopback ports (the one harness), until
    /readyz says 200; yields (base URL, log file). SIGTERM at the end must exit 0."""
    with corolla_process(args, workdir, wait="/readyz") as server:
        yield server.url, server.log_path
        assert server.terminate() == 0, server.log_tail(3000)


def metric(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


