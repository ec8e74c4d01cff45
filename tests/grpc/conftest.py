"""An in-process PredictionService with real models, and a gRPC server for it on port 0.

Models: ``colours`` (the demo ONNX image classifier, version 1), ``fake`` (the fake runtime,
input ``x`` [-1, 4], labels a/b/c/d; versions 1 and 2, version 2 adds 100) and ``broken`` (a
version that fails to load; not served at start). The server and its channel live on the test's
event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_helpers import Served, configs

from corolla.demo_model import write_demo_version
from corolla.grpc.server import build_grpc_server
from corolla.repository.manager import Manager, ManagerOptions
from corolla.runtimes.fake import FakeRuntime, write_fake_version
from corolla.runtimes.onnx import OnnxOptions, OnnxRuntime
from corolla.service import PredictionService, ServiceOptions


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_demo_version(root / "colours", 1)
    write_fake_version(root / "fake", 1, labels=["a", "b", "c", "d"])
    write_fake_version(root / "fake", 2, labels=["a", "b", "c", "d"], offset=100.0)
    write_fake_version(root / "broken", 1, fail="this version cannot load")
    return root


@pytest.fixture(scope="session")
def pools() -> Iterator[tuple[ThreadPoolExecutor, ...]]:
    pools = (ThreadPoolExecutor(2), ThreadPoolExecutor(2), ThreadPoolExecutor(2))
    yield pools
    for p in pools:
        p.shutdown(wait=False)


@pytest_asyncio.fixture
async def served(models_dir: Path, pools: tuple[ThreadPoolExecutor, ...]
                 ) -> AsyncIterator[Served]:
    load, decode, infer = pools
    manager = Manager(runtimes=[OnnxRuntime(OnnxOptions(intra_op_threads=1)), FakeRuntime()],
                      executor=load, options=ManagerOptions(max_load_retries=0))
    service = PredictionService(manager, options=ServiceOptions(batching=None),
                                decode_executor=decode, infer_executor=infer)
    await manager.set_configs(configs(models_dir, "colours", "fake"))
    await manager.wait_until(service.ready, 30)
    server = build_grpc_server(service, max_message_bytes=8 << 20)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(service=service, channel=channel, port=port, models_dir=models_dir)
    finally:
        await channel.close()
        await server.stop(None)
        await manager.close()
