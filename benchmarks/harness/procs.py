"""Server processes and what they cost: start, wait until they answer, CPU and memory, stop.

Every server runs in its own process group (``start_new_session``), so stopping it stops its
workers too and nothing else. CPU is counted over the whole process tree (the server and every
worker it forks), from psutil's per-process times.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ptimes(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass(kw_only=True)
class CpuSnapshot:
    per_pid: dict[int, float] = field(default_factory=dict)
    system_busy: float = 0.0  # seconds of busy CPU on the whole machine
    wall: float = 0.0


def _system_busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


class Server:
    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, url: str, body: bytes, content_type: str, timeout: float = 180.0
                   ) -> str:
        """Until one real request answers 200 (the model is loaded and serving); its body."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.tail()}")
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": content_type})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    if resp.status == 200:
                        return resp.read().decode(errors="replace")
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
            except (OSError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s ({last}):\n{self.tail()}")

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_snapshot(self) -> CpuSnapshot:
        snap = CpuSnapshot(system_busy=_system_busy(), wall=time.monotonic())
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                snap.per_pid[p.pid] = _ptimes(p)
        return snap

    def rss_bytes(self) -> int:
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        # Workers left behind by a server that did not clean up after itself.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)
        self._log.close()


def cpu_seconds_between(a: CpuSnapshot, b: CpuSnapshot) -> float:
    return sum(t - a.per_pid.get(pid, 0.0) for pid, t in b.per_pid.items())
