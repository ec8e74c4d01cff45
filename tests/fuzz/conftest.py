"""A real Corolla server in this process (its own event loop, in a thread) for the property-based
suites: REST on an ephemeral loopback port through uvicorn and every middleware, gRPC on
another, so that a request travels the whole path a client's does, while tracemalloc sees every
Python and numpy allocation the server makes for it.

Hypothesis profiles: ``ci`` (the default: a bounded run, about 90 s for the whole suite) and
``long`` (``HYPOTHESIS_PROFILE=long``: 50x the examples, no deadline; docs/reliability.md).
Models: ``colours`` (the demo image classifier, 64x64 RGB input; encoded images are decoded
server-side) and ``fake`` (numbers in, ``x * 2`` out; input ``x`` [-1, 4]).
"""

from __future__ import annotations

import asyncio
import os
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, settings

from corolla.config import ModelConfig
from corolla.demo_model import write_demo_version
from corolla.runtimes.fake import write_fake_version
from corolla.server import CorollaServer, ServerOptions

CI_EXAMPLES = int(os.environ.get("COROLLA_FUZZ_EXAMPLES", "100"))
settings.register_profile(
    "ci", max_examples=CI_EXAMPLES, deadline=None, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])
settings.register_profile(
    "long", max_examples=CI_EXAMPLES * 50, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The server's decoded-image budget (--max_decoded_image_mib) in these tests.
DECODED_BUDGET = 8 << 20
# What one request may allocate (Python and numpy, as tracemalloc counts): a small multiple of
# its size (a JSON body's parse peaks at ~40x, corolla.admission) plus the decoded-image budget,
# plus a constant for the server's per-request objects.
SIZE_FACTOR = 64
SLACK = 16 << 20


def allocation_bound(request_bytes: int) -> int:
    return SIZE_FACTOR * request_bytes + DECODED_BUDGET + SLACK


@dataclass
class Live:
    url: str
    grpc_target: str
    http: httpx.Client
    channel: grpc.Channel

    def measure(self, call: Callable[[], Any]) -> tuple[Any, int]:
        """``call()``'s result and the peak of traced memory above what was in use before."""
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - base


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("fuzz-models")
    write_demo_version(root / "colours", 1)
    write_fake_version(root / "fake", 1, labels=["a", "b", "c", "d"])
    options = ServerOptions(
        host="127.0.0.1", rest_api_port=0, grpc_port=0, enable_fake_runtime=True,
        models=(ModelConfig(name="colours", base_path=str(root / "colours")),
                ModelConfig(name="fake", base_path=str(root / "fake"))),
        max_decoded_image_bytes=DECODED_BUDGET, memory_budget_bytes=1 << 30,
        file_system_poll_wait_seconds=0)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def run() -> None:
        server = CorollaServer(options)
        holder["server"] = server
        await server.start()
        await server.manager.wait_until(server.ready, 60)
        started.set()
        await server.wait_stopped()  # request_stop, then an orderly shutdown

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(run())
        except BaseException as exc:  # reported by the fixture
            holder["error"] = exc
            started.set()

    thread = threading.Thread(target=main, name="fuzz-server", daemon=True)
    thread.start()
    assert started.wait(120), "the in-process server did not start"
    if "error" in holder:
        raise holder["error"]
    server = holder["server"]
    live = Live(url=f"http://127.0.0.1:{server.rest_port}",
                grpc_target=f"127.0.0.1:{server.grpc_port}",
                http=httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=60),
                channel=grpc.insecure_channel(
                    f"127.0.0.1:{server.grpc_port}",
                    options=[("grpc.max_send_message_length", 64 << 20),
                             ("grpc.max_receive_message_length", 64 << 20)]))
    tracemalloc.start()
    try:
        yield live
    finally:
        tracemalloc.stop()
        live.http.close()
        live.channel.close()
        loop.call_soon_threadsafe(server.request_stop)
        thread.join(60)
