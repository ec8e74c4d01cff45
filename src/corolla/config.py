"""Model configuration: what to serve, from where, under which version policy.

The data types here are frozen dataclasses. They are built from TF Serving's flags
(``--model_name``/``--model_base_path``) or from its ModelServerConfig text format (parsed with
protobuf's text_format into our copy of TF Serving's proto, so the format is exactly theirs).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from corolla.errors import InvalidArgument

PLATFORMS = ("onnx", "tensorflow", "fake", "")


@dataclass(frozen=True, kw_only=True)
class VersionPolicy:
    """TF Serving's ServableVersionPolicy: latest N (default 1), all, or specific versions."""

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "latest" and self.num_versions < 1:
            raise InvalidArgument("model_version_policy latest.num_versions must be >= 1")
        if self.kind == "specific" and not self.versions:
            raise InvalidArgument("model_version_policy specific needs at least one version")

    def select(self, available: list[int]) -> list[int]:
        """The aspired versions among those present on disk."""
        if self.kind == "all":
            return sorted(available)
        if self.kind == "specific":
            return sorted(v for v in available if v in self.versions)
        return sorted(available)[-self.num_versions:]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str
    base_path: str
    platform: str = ""  # "" = detect from each version directory
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    version_labels: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise InvalidArgument(f"invalid model name {self.name!r}")
        if not self.base_path:
            raise InvalidArgument(f"model {self.name!r}: base_path is required")
        if self.platform not in PLATFORMS:
            raise InvalidArgument(
                f"model {self.name!r}: model_platform {self.platform!r} is not supported "
                f"(supported: onnx, tensorflow)")
        for label, version in self.version_labels.items():
            if not label or label[0].isdigit():
                raise InvalidArgument(f"model {self.name!r}: invalid version label {label!r}")
            if version <= 0:
                raise InvalidArgument(f"model {self.name!r}: label {label!r} -> bad version")


# TF Serving's ReloadConfig: serve exactly these models; return once each has settled (or
# raise the error of one that failed), DEADLINE_EXCEEDED past the timeout (seconds).
ReloadConfig = Callable[[Sequence[ModelConfig], float | None], Awaitable[None]]


def resolve_base_path(base_path: str, relative_to: Path | None = None) -> str:
    """Absolute path for a base path; ``file://`` prefixes are accepted as TF Serving does.
    Store URIs (``s3://``, ``gs://``, ``http(s)://``, ``redis(s)://``) are kept as they are."""
    if not base_path:
        raise InvalidArgument("base_path is empty")
    if base_path.startswith("file://"):
        base_path = base_path[len("file://"):]
    if "://" in base_path:  # a remote store (corolla.storage): s3://, gs://, http(s)://, redis://
        from corolla.storage.uri import check_uri

        return check_uri(base_path).rstrip("/")
    p = Path(os.path.expanduser(base_path))
    if not p.is_absolute() and relative_to is not None:
        p = relative_to / p
    return str(p.absolute())


def _policy_from_proto(msg: Any) -> VersionPolicy:
    which = msg.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy(kind="all")
    if which == "specific":
        return VersionPolicy(kind="specific", versions=tuple(int(v) for v in msg.specific.versions))
    if which == "latest":
        return VersionPolicy(kind="latest", num_versions=int(msg.latest.num_versions or 1))
    return VersionPolicy()


def model_configs_from_proto(server_config: Any, relative_to: Path | None = None
                             ) -> list[ModelConfig]:
    which = server_config.WhichOneof("config")
    if which != "model_config_list":
        raise InvalidArgument(
            "model config: only model_config_list is supported "
            f"(got {which or 'nothing'})")
    out: list[ModelConfig] = []
    seen: set[str] = set()
    for c in server_config.model_config_list.config:
        if c.name in seen:
            raise InvalidArgument(f"model config: model {c.name!r} is configured twice")
        seen.add(c.name)
        out.append(ModelConfig(
            name=c.name,
            # Empty stays empty so that ModelConfig names the model in its error.
            base_path=resolve_base_path(c.base_path, relative_to) if c.base_path else "",
            platform=c.model_platform,
            version_policy=_policy_from_proto(c.model_version_policy),
            version_labels={str(k): int(v) for k, v in c.version_labels.items()},
        ))
    return out


def parse_model_config_text(text: str, relative_to: Path | None = None) -> list[ModelConfig]:
    """Parse TF Serving's ModelServerConfig text format (a models.config file)."""
    from google.protobuf import text_format

    from corolla.protos.gen.tensorflow_serving.config import model_server_config_pb2 as msc

    msg = msc.ModelServerConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise InvalidArgument(f"model config: {exc}") from exc
    return model_configs_from_proto(msg, relative_to)


def load_model_config_file(path: str) -> list[ModelConfig]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"cannot read model config file {path}: {exc}") from exc
    try:
        # Relative base paths resolve against the working directory, as in TF Serving.
        return parse_model_config_text(text)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{path}: {exc.message}") from exc
