"""API keys on a real server, REST and gRPC: 401/403/200, open health, rotation by file."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import grpc
import pytest
from corolla_harness import CorollaProcess
from google.protobuf import text_format
from grpc_health.v1 import health_pb2
from ops_process import (
    fake_model,
    grpc_predict_request,
    health_status,
    predict_body,
    prediction_stub,
    serve,
)

from corolla.protos.gen.tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
)

pytestmark = pytest.mark.slow

CONFIG = (
    'model_config_list { config { name: "m" base_path: "m" } '
    'config { name: "other" base_path: "other" } }'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorollaProcess]:
    work = tmp_path_factory.mktemp("auth")
    fake_model(work / "m", 1)
    fake_model(work / "other", 1)
    (work / "models.config").write_text(CONFIG)
    (work / "keys").write_text(
        "# rotation in progress\nold-key\nnew-key\nnarrow other\nops-key @admin\n"
    )
    with serve(
        ["--model_config_file=models.config", "--api_keys_file=keys"],
        work,
        env={"COROLLA_API_KEYS": "env-key-1,env-key-2"},
        wait="/readyz",
    ) as s:
        yield s


def _rest(server: CorollaProcess, model: str, headers: dict[str, str]) -> int:
    with server.client() as c:
        return c.post(
            f"/v1/models/{model}:predict", json=predict_body(), headers=headers
        ).status_code


def _grpc(server: CorollaProcess, model: str, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    with grpc.insecure_channel(server.grpc_target) as ch:
        try:
            prediction_stub(ch).Predict(grpc_predict_request(model), metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_rest_401_403_200(server: CorollaProcess) -> None:
    assert _rest(server, "m", {}) == 401
    assert _rest(server, "m", {"authorization": "Bearer nope"}) == 401
    assert _rest(server, "m", {"authorization": "Bearer narrow"}) == 403
    assert _rest(server, "other", {"authorization": "Bearer narrow"}) == 200
    assert _rest(server, "m", {"authorization": "Bearer old-key"}) == 200
    assert _rest(server, "m", {"x-api-key": "new-key"}) == 200
    assert _rest(server, "m", {"x-api-key": "env-key-2"}) == 200
    with server.client() as c:
        assert c.get("/readyz").status_code == 200
        assert c.get("/v1/models/m").status_code == 401
        assert c.get("/v1/models/m", headers={"x-api-key": "narrow"}).status_code == 403


def test_grpc_unauthenticated_permission_denied_ok(server: CorollaProcess) -> None:
    assert _grpc(server, "m", []) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc(server, "m", [("authorization", "Bearer nope")]) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        _grpc(server, "m", [("authorization", "Bearer narrow")])
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert _grpc(server, "other", [("x-api-key", "narrow")]) == grpc.StatusCode.OK
    assert _grpc(server, "m", [("authorization", "Bearer old-key")]) == grpc.StatusCode.OK
    with grpc.insecure_channel(server.grpc_target) as ch:
        assert health_status(ch) == health_pb2.HealthCheckResponse.SERVING  # open
        # Reloading the configuration (an empty one would unload every model) needs an admin
        # key: a client key, even one for every model, may not.
        stub = model_service_pb2_grpc.ModelServiceStub(ch)
        req = model_management_pb2.ReloadConfigRequest()
        for key in ("narrow", "old-key", "env-key-1"):
            with pytest.raises(grpc.RpcError) as e:
                stub.HandleReloadConfigRequest(req, metadata=[("x-api-key", key)], timeout=10)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, key
            assert "admin key" in (e.value.details() or "")
        with pytest.raises(grpc.RpcError) as e:
            stub.HandleReloadConfigRequest(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # The admin key may: the same two models again, so nothing changes.
        text_format.Parse(CONFIG, req.config)
        stub.HandleReloadConfigRequest(req, metadata=[("x-api-key", "ops-key")], timeout=30)
        assert _grpc(server, "m", [("x-api-key", "ops-key")]) == grpc.StatusCode.OK


def test_key_rotation_by_editing_the_file(server: CorollaProcess) -> None:
    keys = server.log_path.parent / "keys"
    keys.write_text("new-key\nnarrow other\nops-key @admin\n")  # old-key retired
    os.utime(keys, ns=(time.time_ns(), time.time_ns()))
    server.wait_until(lambda: _rest(server, "m", {"authorization": "Bearer old-key"}) == 401,
                      "the keys file re-read", 15)
    assert _rest(server, "m", {"authorization": "Bearer new-key"}) == 200
    assert (
        _grpc(server, "m", [("authorization", "Bearer old-key")]) == grpc.StatusCode.UNAUTHENTICATED
    )
    assert _rest(server, "m", {"x-api-key": "env-key-1"}) == 200  # the environment's stay
    assert "API keys loaded from keys: 3 key(s), 1 admin" in server.log()
