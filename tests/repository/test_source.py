"""The file-system source (corolla.repository.source): aspired versions from a base path."""

from __future__ import annotations

from pathlib import Path

import pytest

from corolla.config import ModelConfig, VersionPolicy
from corolla.errors import NotFound
from corolla.repository.source import AspiredVersion, SourceError, list_versions, poll_once


def cfg(base: Path, policy: VersionPolicy | None = None) -> ModelConfig:
    return ModelConfig(name="m", base_path=str(base), version_policy=policy or VersionPolicy())


@pytest.fixture
def base(tmp_path: Path) -> Path:
    b = tmp_path / "m"
    for v in ("1", "2", "10"):
        (b / v).mkdir(parents=True)
    # Everything else a base path may hold is ignored.
    (b / ".staging-0123abcd").mkdir()
    (b / "3.tmp").mkdir()
    (b / "0").mkdir()
    (b / "-4").mkdir()
    (b / "latest").mkdir()
    (b / "7").write_text("a file, not a version directory")
    (b / "README").write_text("hi")
    return b


def test_lists_numeric_directories_only(base: Path) -> None:
    assert list_versions(str(base)) == {1: base / "1", 2: base / "2", 10: base / "10"}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy(), [10]),  # numeric order, not lexical ("2" > "10")
        (VersionPolicy(kind="latest", num_versions=2), [2, 10]),
        (VersionPolicy(kind="all"), [1, 2, 10]),
        (VersionPolicy(kind="specific", versions=(1, 7, 10)), [1, 10]),
    ],
)
def test_poll_once_applies_the_policy(
    base: Path, policy: VersionPolicy, expected: list[int]
) -> None:
    found = poll_once(cfg(base, policy))
    assert found == [AspiredVersion(version=v, path=base / str(v)) for v in expected]


def test_symlinked_version_directory_counts(base: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (base / "11").symlink_to(target)
    assert poll_once(cfg(base))[0].version == 11


def test_empty_base_path_aspires_to_nothing(tmp_path: Path) -> None:
    assert poll_once(cfg(tmp_path)) == []


def test_missing_base_path_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SourceError, match=f"Could not find base path {missing}") as info:
        poll_once(cfg(missing))
    assert isinstance(info.value, NotFound)


def test_base_path_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SourceError, match="Could not list base path"):
        poll_once(cfg(f))
