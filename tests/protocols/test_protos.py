"""The generated protos accept TF Serving's text formats and speak its wire format."""

from __future__ import annotations

import importlib
import pathlib

import pytest
from google.protobuf import text_format

from corolla.protos.gen.tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
from corolla.protos.gen.tensorflow_serving.config import (
    model_server_config_pb2,
    monitoring_config_pb2,
    ssl_config_pb2,
)
from corolla.protos.gen.tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

MODELS_CONFIG = """
# A comment, as TF Serving allows.
model_config_list {
  config {
    name: 'flowers'
    base_path: '/models/flowers/'
    model_platform: 'tensorflow'
    model_version_policy {
      specific {
        versions: 1
        versions: 2
      }
    }
    version_labels {
      key: 'stable'
      value: 1
    }
    version_labels {
      key: 'canary'
      value: 2
    }
  }
  config {
    name: "birds"
    base_path: "/models/birds"
    model_platform: "onnx"
    model_version_policy { latest { num_versions: 2 } }
    logging_config {
      log_collector_config { type: "" filename_prefix: "/tmp/log" }
      sampling_config { sampling_rate: 0.5 }
    }
  }
  config {
    name: "all"
    base_path: "/models/all"
    model_version_policy: { all: {} }
  }
}
"""

BATCHING = """
max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
thread_pool_name { value: "batch" }
allowed_batch_sizes: 32
allowed_batch_sizes: 64
allowed_batch_sizes: 128
pad_variable_length_inputs: true
enable_large_batch_splitting { value: true }
max_execution_batch_size { value: 64 }
"""

MONITORING = """
prometheus_config {
  enable: true,
  path: "/monitoring/prometheus/metrics"
}
"""

SSL = """
server_key: '-----BEGIN PRIVATE KEY-----\\nMII\\n-----END PRIVATE KEY-----'
server_cert: '-----BEGIN CERTIFICATE-----\\nMII\\n-----END CERTIFICATE-----'
custom_ca: ''
client_verify: false
"""


def test_models_config_text_format() -> None:
    cfg = text_format.Parse(MODELS_CONFIG, model_server_config_pb2.ModelServerConfig())
    assert cfg.WhichOneof("config") == "model_config_list"
    flowers, birds, every = cfg.model_config_list.config
    assert (flowers.name, flowers.base_path, flowers.model_platform) == (
        "flowers", "/models/flowers/", "tensorflow")
    policy = flowers.model_version_policy
    assert policy.WhichOneof("policy_choice") == "specific"
    assert list(policy.specific.versions) == [1, 2]
    assert dict(flowers.version_labels) == {"stable": 1, "canary": 2}
    assert birds.model_version_policy.latest.num_versions == 2
    assert birds.logging_config.sampling_config.sampling_rate == 0.5
    assert every.model_version_policy.WhichOneof("policy_choice") == "all"


def test_models_config_rejects_unknown_fields() -> None:
    with pytest.raises(text_format.ParseError):
        text_format.Parse("model_config_list { config { nmae: 'x' } }",
                          model_server_config_pb2.ModelServerConfig())


def test_batching_parameters_text_format() -> None:
    p = text_format.Parse(BATCHING, session_bundle_config_pb2.BatchingParameters())
    assert p.HasField("max_batch_size") and p.max_batch_size.value == 128
    assert p.HasField("batch_timeout_micros") and p.batch_timeout_micros.value == 0
    assert p.max_enqueued_batches.value == 1_000_000
    assert p.num_batch_threads.value == 8
    assert p.thread_pool_name.value == "batch"
    assert list(p.allowed_batch_sizes) == [32, 64, 128]
    assert p.pad_variable_length_inputs is True
    assert p.enable_large_batch_splitting.value is True
    assert p.max_execution_batch_size.value == 64
    empty = session_bundle_config_pb2.BatchingParameters()
    assert not empty.HasField("max_batch_size")


def test_monitoring_and_ssl_text_format() -> None:
    m = text_format.Parse(MONITORING, monitoring_config_pb2.MonitoringConfig())
    assert m.prometheus_config.enable and m.prometheus_config.path.endswith("/metrics")
    s = text_format.Parse(SSL, ssl_config_pb2.SSLConfig())
    assert s.server_key.startswith("-----BEGIN PRIVATE KEY-----\nMII")
    assert not s.client_verify


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_predict_request_wire_bytes() -> None:
    # Hand-encoded with TF Serving's field numbers: model_spec=1 {name=1, version=2 {value=1},
    # signature_name=3}, inputs=2 map entry {key=1, value=2 TensorProto{dtype=1}}.
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.model_spec.version.value = 7
    req.model_spec.signature_name = "s"
    req.inputs["x"].dtype = 1
    version = b"\x12" + _varint(2) + b"\x08\x07"
    spec = b"\x0a\x01m" + version + b"\x1a\x01s"
    tensor = b"\x08\x01"
    entry = b"\x0a\x01x" + b"\x12" + _varint(len(tensor)) + tensor
    expected = b"\x0a" + _varint(len(spec)) + spec + b"\x12" + _varint(len(entry)) + entry
    assert req.SerializeToString(deterministic=True) == expected


def test_signature_def_map_packs_into_any() -> None:
    resp = get_model_metadata_pb2.GetModelMetadataResponse()
    sigs = get_model_metadata_pb2.SignatureDefMap()
    sigs.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
    resp.metadata["signature_def"].Pack(sigs)
    assert resp.metadata["signature_def"].type_url == (
        "type.googleapis.com/tensorflow.serving.SignatureDefMap")
    back = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(back) and back == sigs


def test_every_generated_module_imports() -> None:
    root = pathlib.Path(importlib.import_module("corolla.protos.gen").__file__).parent
    for path in sorted(root.rglob("*_pb2*.py")):
        rel = path.relative_to(root).with_suffix("")
        importlib.import_module("corolla.protos.gen." + ".".join(rel.parts))
