"""Schemathesis against a live server, from the OpenAPI document it serves (issue 22, Tests):
requests generated from each operation's schema (and from violations of it), each answer
checked: no 5xx, a documented status code, the documented content type, and a body that matches
the documented schema. Bounded: ``COROLLA_SCHEMATHESIS_EXAMPLES`` per operation (default 25;
about a minute for the 32 operations); docs/reliability.md has a longer run's size.

Path parameters that name a model are mostly the served ones (``colours``, the demo image
classifier; ``fake``, numbers in), so that requests reach the decoders instead of 404.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from corolla_harness import free_port
from hypothesis import HealthCheck, settings
from schemathesis import checks

from corolla.demo_model import write_demo_version
from corolla.http.openapi import document
from corolla.http.routes import RouteTable
from corolla.options import ServerOptions
from corolla.runtimes.fake import write_fake_version
from corolla.server import CorollaServer

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("COROLLA_SCHEMATHESIS_EXAMPLES", "25"))
MODELS = ("colours", "fake")
CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance]


def _schema() -> Any:
    # The document of the server below's settings (the test then checks that the server
    # serves this very document).
    server = CorollaServer(ServerOptions(grpc_port=-1))
    try:
        doc = document(RouteTable(server.rest_routes()), server.options.metrics_paths)
    finally:
        for pool in (server.decode_pool, server.infer_pool, server.load_pool):
            pool.shutdown(wait=False)
    return schemathesis.openapi.from_dict(doc)


schema = _schema()


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import subprocess
    import sys
    import time

    root = tmp_path_factory.mktemp("schemathesis")
    write_demo_version(root / "colours", 1)
    write_fake_version(root / "fake", 1, labels=["a", "b", "c", "d"])
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{root / n}" }}\n' for n in MODELS) + "}\n")
    port = free_port()
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corolla", "serve", "--host=127.0.0.1",
             f"--rest_api_port={port}", "--port=0", f"--model_config_file={config}",
             "--memory_budget_mib=512"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "COROLLA_ENABLE_FAKE_RUNTIME": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        text = log.read_text()
        assert "Traceback" not in text, text[-5000:]  # no 5xx was logged either


def test_the_server_serves_this_document(live_url: str) -> None:
    assert requests.get(live_url + "/openapi.json", timeout=10).json() == schema.raw_schema


def _steer(case: Any) -> None:
    """Most requests name a served model and version (hash of what hypothesis drew: stable)."""
    params = case.path_parameters or {}
    for key, choices in (("name", MODELS), ("version", ("1",)), ("label", ("stable",))):
        value = params.get(key)
        if isinstance(value, str):
            h = zlib.crc32(value.encode())
            if h % 4:
                params[key] = choices[h % len(choices)]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=list(HealthCheck), print_blob=True)
def test_api(case: Any, live_url: str) -> None:
    _steer(case)
    case.call_and_validate(base_url=live_url, checks=CHECKS, timeout=30)


def test_size(live_url: Path) -> None:
    """How many operations the run covers (reported in docs/reliability.md)."""
    operations = [op for op in schema.get_all_operations()]
    assert len(operations) >= 30
