"""Pure parts of the operations modules: key files, metrics exposition, MonitoringConfig,
path confinement, warmup inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from corolla.auth import KeyStore, bearer_token, parse_keys_text
from corolla.config import ModelConfig
from corolla.confine import ConfinedRuntime, check_configs, is_within
from corolla.demo_model import write_demo_version
from corolla.errors import Code, CorollaError, InvalidArgument
from corolla.metrics import Metrics, parse_monitoring_config, render
from corolla.model_dir import Signature, TensorSpec
from corolla.runtimes.fake import FakeRuntime, write_fake_version
from corolla.warmup import warm_up, warmup_inputs


@pytest.mark.parametrize(("text", "expected"), [
    ("k1\n", [None]),
    ("# comment\n\nk1  a,b\nk2 *\n", [frozenset({"a", "b"}), None]),
    ("k#1 m # trailing comment\n", [frozenset({"m"})]),
])  # fmt: skip
def test_parse_keys(text: str, expected: list[frozenset[str] | None]) -> None:
    assert [k.models for k in parse_keys_text(text)] == expected


def test_parse_keys_admin_scope() -> None:
    keys = parse_keys_text("client\nall *\nops @admin\nops2 *,@admin  # also admin\nt m\n")
    assert [(k.models, k.admin) for k in keys] == [
        (None, False), (None, False), (None, True), (None, True), (frozenset({"m"}), False)
    ]  # fmt: skip
    assert keys[2].allows("anything")
    with pytest.raises(InvalidArgument, match=":1: an @admin key may call every model"):
        parse_keys_text("ops m1,@admin\n")
    with pytest.raises(InvalidArgument, match=":2: unknown scope @root"):
        parse_keys_text("ok\nops @root\n")


def test_parse_keys_rejects_empty_model_list() -> None:
    with pytest.raises(InvalidArgument, match=":1: empty model list"):
        parse_keys_text("k1 ,\n")


def test_keystore_authenticates_authorizes_and_reloads(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("old-key\nnarrow m1\n")
    store = KeyStore(path=str(f), static=["env-key"])
    # Keys for every model are client keys; only @admin keys may change the configuration.
    assert not store.authorize("old-key", "m9").admin
    assert not store.authorize("env-key", None).admin
    assert store.authorize("narrow", "m1").models == frozenset({"m1"})
    with pytest.raises(CorollaError) as e:
        store.authorize("narrow", "m2")
    assert e.value.code == Code.PERMISSION_DENIED
    for bad in (None, "", "nope", "old-ke", "old-key2"):
        with pytest.raises(CorollaError) as e:
            store.authenticate(bad)
        assert e.value.code == Code.UNAUTHENTICATED
    # Rotation: a new file replaces the file's keys; the environment's stay.
    f.write_text("new-key\n")
    os.utime(f, ns=(1, 1))  # a different mtime even on coarse clocks
    assert store.reload()
    assert store.authenticate("new-key")
    assert store.authenticate("env-key")
    with pytest.raises(CorollaError):
        store.authenticate("old-key")
    # A broken file keeps the keys in force.
    f.write_text("new-key ,\n")
    os.utime(f, ns=(2, 2))
    assert not store.reload()
    assert store.authenticate("new-key")
    # Only digests are kept.
    assert all(len(k.digest) == 32 for k in store.keys)


def test_keystore_rereads_contents_whose_metadata_did_not_change(tmp_path: Path) -> None:
    """A mount that serves new contents with the same mtime, size and inode (Cloud Run's
    Secret Manager volumes) is still caught by the periodic full re-read."""
    f = tmp_path / "keys"
    f.write_text("key-aaa\n")
    os.utime(f, ns=(5, 5))
    lazy = KeyStore(path=str(f), reread_seconds=3600)
    eager = KeyStore(path=str(f), reread_seconds=0)
    assert not eager.reload()  # re-read, unchanged: no reload reported
    with f.open("r+") as fh:  # same inode, same size
        fh.write("key-bbb\n")
    os.utime(f, ns=(5, 5))
    assert not lazy.reload()
    assert lazy.authenticate("key-aaa")
    assert eager.reload()
    assert eager.authenticate("key-bbb")
    with pytest.raises(CorollaError):
        eager.authenticate("key-aaa")


def test_keystore_without_keys_refuses_everything(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("# nobody\n")
    with pytest.raises(CorollaError):
        KeyStore(path=str(f)).authenticate("anything")


@pytest.mark.parametrize(("authorization", "api_key", "token"), [
    ("Bearer abc", None, "abc"), ("bearer  abc ", None, "abc"), (None, "xyz", "xyz"),
    ("Basic Zm9v", "xyz", "xyz"), ("Basic Zm9v", None, None), (None, None, None),
])  # fmt: skip
def test_bearer_token(authorization: str | None, api_key: str | None, token: str | None) -> None:
    assert bearer_token(authorization, api_key) == token


def test_exposition_keeps_tf_serving_names() -> None:
    m = Metrics(process=False)
    m.observe_request("flowers", "Predict", "GRPC", "OK", 0.0015)
    m.observe_request("flowers", "Predict", "GRPC", "INVALID_ARGUMENT", 0.0001)
    m.load_failures.labels("flowers").inc()
    hook = m.batch_hook("flowers")
    hook(8, [0.001, 0.002])
    text = render(m.registry).decode()
    assert "# TYPE :tensorflow:serving:request_count counter\n" in text
    assert ':tensorflow:serving:request_count{model_name="flowers",status="OK"} 1.0\n' in text
    assert (
        ':tensorflow:serving:request_latency_sum{model_name="flowers",API="Predict",'
        'entrypoint="GRPC"} 1600.0' in text
    )
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="flowers",API="Predict",'
        'entrypoint="GRPC",le="10.0"} 0.0' in text
    )
    assert (
        ':tensorflow:serving:batching:processed_batch_size_v2{model_name="flowers",'
        'op_name="batch",batch_size="8"} 1.0' in text
    )
    assert (
        ":tensorflow:serving:batching_session:queuing_latency_count"
        '{thread_pool_name="flowers"} 2.0' in text
    )
    assert "# TYPE corolla_model_load_failures_total counter\n" in text
    assert 'corolla_model_load_failures_total{model_name="flowers"} 1.0' in text
    assert "_created" not in text


def test_label_values_are_escaped() -> None:
    m = Metrics(process=False)
    m.request_count.inc(('we"ird\\name\n', "OK"))
    assert 'model_name="we\\"ird\\\\name\\n"' in render(m.registry).decode()


@pytest.mark.parametrize(("text", "expected"), [
    ("prometheus_config { enable: true }", (True, "/monitoring/prometheus/metrics")),
    ('prometheus_config { enable: true, path: "/m" }', (True, "/m")),
    ("prometheus_config { enable: false }", (False, "/monitoring/prometheus/metrics")),
    ("", (False, "/monitoring/prometheus/metrics")),
])  # fmt: skip
def test_monitoring_config(text: str, expected: tuple[bool, str]) -> None:
    assert parse_monitoring_config(text) == expected


def test_monitoring_config_errors() -> None:
    with pytest.raises(InvalidArgument):
        parse_monitoring_config("prometheus_config { bogus: 1 }")
    with pytest.raises(InvalidArgument, match="must start with"):
        parse_monitoring_config('prometheus_config { enable: true path: "m" }')


def test_confinement(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_fake_version(root / "m", 1)
    outside = tmp_path / "elsewhere"
    write_fake_version(outside, 7)
    (root / "m" / "2").symlink_to(outside / "7")  # a version that escapes through a link
    roots = [str(root)]
    assert is_within(root / "m" / "1", roots)
    assert not is_within(root / "m" / "2", roots)
    assert not is_within(root / ".." / "elsewhere", roots)
    assert not is_within(str(root) + "-sibling", roots)
    check_configs([ModelConfig(name="m", base_path=str(root / "m"))], roots)
    with pytest.raises(CorollaError) as e:
        check_configs([ModelConfig(name="x", base_path=str(root / ".." / "elsewhere"))], roots)
    assert e.value.code == Code.PERMISSION_DENIED
    # A store URI is no path: its versions load from the cache, which must be within a root.
    remote = [ModelConfig(name="s", base_path="s3://bucket/models/s")]
    check_configs(remote, roots, str(root / ".cache"))
    check_configs(remote, roots)  # (config reloads: the runtime checks each cached version)
    with pytest.raises(CorollaError, match="--model_cache_dir"):
        check_configs(remote, roots, str(outside))
    rt = ConfinedRuntime(FakeRuntime(), roots)
    assert rt.platform == "fake"
    assert rt.load(root / "m" / "1").metadata.platform == "fake"
    assert rt.can_load(root / "m" / "2")  # claimed, so that load() says why
    with pytest.raises(CorollaError, match="outside the allowed model roots"):
        rt.load(root / "m" / "2")


def test_model_names_cannot_be_paths() -> None:
    for name in ("../etc", "a/b", "..", "."):
        with pytest.raises(InvalidArgument):
            ModelConfig(name=name, base_path="/models/x")


def test_warmup_inputs_zeros_with_unknown_dims_as_one() -> None:
    sig = Signature(
        inputs={
            "a": TensorSpec(name="a", dtype="int64", shape=(-1, 3, -1)),
            "b": TensorSpec(name="b", dtype="float32", shape=(2, 5)),
        },
        outputs={},
    )
    got = warmup_inputs(sig, None)
    assert got is not None
    assert got["a"].shape == (1, 3, 1) and got["a"].dtype == np.int64
    assert got["b"].shape == (2, 5) and not got["b"].any()
    strings = Signature(inputs={"s": TensorSpec(name="s", dtype="string", shape=(-1,))}, outputs={})
    assert warmup_inputs(strings, None) is None


def test_warmup_runs_an_onnx_image_model(tmp_path: Path) -> None:
    from corolla.runtimes.onnx import OnnxOptions, OnnxRuntime

    write_demo_version(tmp_path / "colours", 1, size=16)
    servable = OnnxRuntime(OnnxOptions()).load(tmp_path / "colours" / "1")
    try:
        md = servable.metadata
        assert md.preprocessing is not None
        inputs = warmup_inputs(md.default_signature, md.preprocessing)
        assert inputs is not None
        assert inputs[md.preprocessing.input].shape == (1, *md.preprocessing.input_shape)
        assert warm_up(servable, iterations=2) == 2 * len(md.signatures)
    finally:
        servable.close()
