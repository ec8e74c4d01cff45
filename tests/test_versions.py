"""Model versions as clients write them (corolla.versions): one parser, as a table."""

from __future__ import annotations

import pytest

from corolla.errors import InvalidArgument
from corolla.model_dir import is_version_name
from corolla.versions import MAX_VERSION, parse_version, tf_serving_version, v2_version

# Each is a client's mistake: not a run of ASCII digits within int64. str.isdigit() says yes
# to the first five (superscripts, Arabic-Indic and Devanagari digits, a fullwidth one).
NOT_VERSIONS = ["²", "¹", "١", "٣٤", "१", "１", "1²", "+1", "-1", " 1", "1 ", "1\n", "1.0",
                "0x1", "1e3", "", "one", str(MAX_VERSION + 1), "9" * 40]


@pytest.mark.parametrize(("text", "want"), [
    ("1", 1), ("42", 42), ("007", 7), ("0", 0), (str(MAX_VERSION), MAX_VERSION),
    *((t, None) for t in NOT_VERSIONS),
])
def test_parse_version(text: str, want: int | None) -> None:
    assert parse_version(text) == want


@pytest.mark.parametrize("text", [t for t in NOT_VERSIONS if t])
def test_mistakes_are_invalid_argument_with_each_apis_message(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"(?s)Failed to convert version: .* to numeric"):
        tf_serving_version(text)
    with pytest.raises(InvalidArgument, match="model version must be a positive integer"):
        v2_version(text)


def test_v2_empty_means_latest_and_version_dirs_are_positive() -> None:
    assert v2_version("") is None and v2_version("3") == 3
    assert is_version_name("1") and is_version_name("12")
    assert not is_version_name("0")
    assert not any(is_version_name(t) for t in NOT_VERSIONS)
