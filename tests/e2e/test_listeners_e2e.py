"""Listeners (issue 22 items 6, 9, 10, 11), against real server processes:

- gRPC binds ``--host`` (``--grpc_host`` overrides): loopback means loopback;
- keep-alive connections close after ``--http_max_requests_per_connection`` requests or
  ``--max_connection_age_seconds``, so that clients reconnect and spread over the processes;
- with ``--rest_workers``, no process takes a request before its models have loaded (the main
  process too listens only once they have settled): no 404 while a slow model loads;
- SIGTERM under load: every request that reached an established connection is answered
  (benchmarks/drain.py measures many more runs; docs/reliability.md).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from corolla.runtimes.fake import write_fake_version

pytestmark = pytest.mark.slow

BODY = {"instances": [[1.0, 2.0, 3.0, 4.0]]}


def _listening(pid: int, port: int) -> set[str]:
    """The addresses a process listens on at ``port`` (grpcio binds IPv4 addresses on an IPv6
    socket as ``::ffff:a.b.c.d``, which takes that IPv4 address only)."""
    return {c.laddr.ip.removeprefix("::ffff:")
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_grpc_binds_the_host(start_corolla: Any, tmp_path: Path) -> None:
    write_fake_version(tmp_path / "m", 1)
    s = start_corolla("--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                      fake_runtime=True, wait_for=("m",))  # the fixture passes --host=127.0.0.1
    assert _listening(s.proc.pid, s.grpc_port) == {"127.0.0.1"}
    assert _listening(s.proc.pid, s.rest_port) == {"127.0.0.1"}
    s2 = start_corolla("--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                       "--grpc_host=0.0.0.0", fake_runtime=True, wait_for=("m",))
    assert _listening(s2.proc.pid, s2.grpc_port) == {"::"}  # every interface, IPv4 and IPv6


def test_keep_alive_connections_are_closed_to_rebalance(start_corolla: Any,
                                                         tmp_path: Path) -> None:
    write_fake_version(tmp_path / "m", 1)
    s = start_corolla("--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                      "--http_max_requests_per_connection=3", fake_runtime=True,
                      wait_for=("m",))
    with httpx.Client(base_url=s.url, timeout=30) as c:
        headers = [c.post("/v1/models/m:predict", json=BODY).headers.get("connection")
                   for _ in range(7)]
    assert headers == [None, None, "close", None, None, "close", None]
    s2 = start_corolla("--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                       "--max_connection_age_seconds=0.5", fake_runtime=True, wait_for=("m",))
    with httpx.Client(base_url=s2.url, timeout=30) as c:
        assert c.get("/v1/models/m").headers.get("connection") is None
        time.sleep(0.6)  # the connection's age is the point of this test
        assert c.get("/v1/models/m").headers.get("connection") == "close"
        assert c.get("/v1/models/m").headers.get("connection") is None  # a new connection


def test_processes_that_share_ports_listen_once_loaded(start_corolla: Any,
                                                       tmp_path: Path) -> None:
    """A model that takes 3 s to load, two processes: from the start, requests on new
    connections are refused (nobody listens yet) or answered 200, never 404 (a process
    that listened while still loading answered 'Servable not found')."""
    write_fake_version(tmp_path / "m", 1, load_seconds=3.0)
    s = start_corolla("--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                      "--rest_workers=2", fake_runtime=True)
    seen: dict[Any, int] = {}
    deadline = time.monotonic() + 60
    while seen.get(200, 0) < 40 and time.monotonic() < deadline:
        try:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                status: Any = c.post("/v1/models/m:predict", json=BODY).status_code
        except httpx.ConnectError:
            status = "refused"
        seen[status] = seen.get(status, 0) + 1
    assert set(seen) <= {200, "refused"}, seen
    assert seen.get(200, 0) >= 40 and seen.get("refused", 0) > 0, seen


def test_sigterm_under_load_loses_no_request(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from drain import one_run
    finally:
        sys.path.pop(0)
    write_fake_version(tmp_path / "m", 1, labels=["a", "b", "c", "d"], predict_seconds=0.002)
    totals: dict[str, int] = {}
    for run in range(4):
        outcomes, code = one_run(tmp_path / "m", 16, run, [])
        assert code == 0
        for k, v in outcomes.items():
            totals[k] = totals.get(k, 0) + v
    assert not [k for k in totals if k.startswith("lost")], totals
    assert totals.get("answered", 0) > 100 and totals.get("refused", 0) == 4 * 16, totals
    assert threading.active_count() < 50
