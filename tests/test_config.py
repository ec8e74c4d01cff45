"""Model configuration: version policies, ModelConfig checks, the models.config text format."""

from __future__ import annotations

from pathlib import Path

import pytest

from corolla.config import (
    ModelConfig,
    VersionPolicy,
    load_model_config_file,
    parse_model_config_text,
    resolve_base_path,
)
from corolla.errors import InvalidArgument


@pytest.mark.parametrize(
    ("policy", "available", "expected"),
    [
        (VersionPolicy(), [1, 2, 3], [3]),
        (VersionPolicy(), [3, 1, 2], [3]),
        (VersionPolicy(), [], []),
        (VersionPolicy(kind="latest", num_versions=2), [5, 1, 3], [3, 5]),
        (VersionPolicy(kind="latest", num_versions=5), [1, 2], [1, 2]),
        (VersionPolicy(kind="all"), [3, 1, 2], [1, 2, 3]),
        (VersionPolicy(kind="all"), [], []),
        (VersionPolicy(kind="specific", versions=(1, 3)), [1, 2, 3, 4], [1, 3]),
        (VersionPolicy(kind="specific", versions=(7,)), [1, 2], []),
        (VersionPolicy(kind="specific", versions=(2, 9)), [1, 2], [2]),
    ],
)
def test_version_policy_select(
    policy: VersionPolicy, available: list[int], expected: list[int]
) -> None:
    assert policy.select(available) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "latest", "num_versions": 0}, "num_versions must be >= 1"),
        ({"kind": "specific"}, "at least one version"),
    ],
)
def test_version_policy_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        VersionPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "base_path": "/m"}, "invalid model name"),
        ({"name": "a/b", "base_path": "/m"}, "invalid model name"),
        ({"name": "..", "base_path": "/m"}, "invalid model name"),
        ({"name": "m", "base_path": ""}, "base_path is required"),
        ({"name": "m", "base_path": "/m", "platform": "pytorch"}, "'pytorch' is not supported"),
        ({"name": "m", "base_path": "/m", "version_labels": {"1x": 1}}, "invalid version label"),
        ({"name": "m", "base_path": "/m", "version_labels": {"": 1}}, "invalid version label"),
        ({"name": "m", "base_path": "/m", "version_labels": {"stable": 0}}, "bad version"),
    ],
)
def test_model_config_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ModelConfig(**kwargs)  # type: ignore[arg-type]


def test_resolve_base_path(tmp_path: Path) -> None:
    assert resolve_base_path("file:///models/x") == "/models/x"
    assert resolve_base_path("rel/x", tmp_path) == str(tmp_path / "rel/x")
    assert Path(resolve_base_path("rel")).is_absolute()
    # Store URIs stay as they are (corolla.storage); other schemes are refused.
    assert resolve_base_path("gs://bucket/models/") == "gs://bucket/models"
    assert resolve_base_path("redis://h:6379/0/m") == "redis://h:6379/0/m"
    with pytest.raises(InvalidArgument, match="unsupported scheme hdfs://"):
        resolve_base_path("hdfs://namenode/models")
    with pytest.raises(InvalidArgument, match="no bucket name"):
        resolve_base_path("s3:///models")
    with pytest.raises(InvalidArgument, match="empty"):  # not the working directory
        resolve_base_path("")


MODELS_CONFIG = """
# TF Serving's models.config, as people write it
model_config_list {
  config {
    name: 'latest2'
    base_path: '/models/a'
    model_platform: "onnx"
    model_version_policy { latest { num_versions: 2 } }
  }
  config {
    name: "every"
    base_path: "file:///models/b"
    model_version_policy { all {} }
  }
  config {
    name: "pinned"
    base_path: "/models/c"
    model_version_policy { specific { versions: 1 versions: 3 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 3 }
  }
  config { name: "plain" base_path: "relative/d" }
}
"""


def test_parse_models_config() -> None:
    configs = parse_model_config_text(MODELS_CONFIG, relative_to=Path("/root"))
    by_name = {c.name: c for c in configs}
    assert list(by_name) == ["latest2", "every", "pinned", "plain"]
    assert by_name["latest2"].version_policy == VersionPolicy(kind="latest", num_versions=2)
    assert by_name["latest2"].platform == "onnx"
    assert by_name["every"].version_policy == VersionPolicy(kind="all")
    assert by_name["every"].base_path == "/models/b"
    assert by_name["pinned"].version_policy == VersionPolicy(kind="specific", versions=(1, 3))
    assert by_name["pinned"].version_labels == {"stable": 1, "canary": 3}
    assert by_name["plain"].version_policy == VersionPolicy()
    assert by_name["plain"].base_path == "/root/relative/d"
    assert by_name["plain"].platform == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'a' base_path: '/a' }", "model config:"),
        ("model_config_list { config { nme: 'a' } }", "nme"),
        ("", "only model_config_list is supported"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' } "
            "config { name: 'a' base_path: '/b' } }",
            "'a' is configured twice",
        ),
        ("model_config_list { config { name: 'a' } }", "base_path is required"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' "
            "model_version_policy { latest { num_versions: 0 } } } }",
            None,
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' "
            "model_version_policy { specific { } } } }",
            "at least one version",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'caffe' } }",
            "'caffe' is not supported",
        ),
    ],
)
def test_parse_models_config_rejects(text: str, message: str | None) -> None:
    if message is None:  # latest { num_versions: 0 } means TF Serving's default, 1
        (cfg,) = parse_model_config_text(text)
        assert cfg.version_policy == VersionPolicy()
        return
    with pytest.raises(InvalidArgument, match=message):
        parse_model_config_text(text)


def test_load_model_config_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    with pytest.raises(InvalidArgument, match="cannot read model config file"):
        load_model_config_file(str(path))
    path.write_text("model_config_list { config { name: 'x' base_path: '/x' } }")
    (cfg,) = load_model_config_file(str(path))
    assert cfg.name == "x" and cfg.base_path == "/x"
    path.write_text("model_config_list { bogus: 1 }")
    with pytest.raises(InvalidArgument) as info:
        load_model_config_file(str(path))
    assert str(path) in info.value.message and "bogus" in info.value.message
