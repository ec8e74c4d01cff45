"""Model versions as clients write them in URLs and strings: one parser for every route.

A version is a number of ASCII digits that fits TF Serving's int64 (``/versions/3``, V2's
``"model_version": "3"``). Anything else is the client's mistake: INVALID_ARGUMENT with the
message of the API that received it. (Python's ``str.isdigit`` also accepts '²' and Arabic-Indic
digits, which ``int()`` then refuses or reads as another number: one such request gave 500 on
every route that takes a version.) Version 0 and versions that do not exist are NOT_FOUND at
lookup, as TF Serving answers.
"""

from __future__ import annotations

import re

from corolla.errors import InvalidArgument

MAX_VERSION = 2**63 - 1  # int64, TF Serving's version type
_DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)


def parse_version(text: str) -> int | None:
    """``text`` as a version number, or None when it is not one."""
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_VERSION else None


def tf_serving_version(text: str) -> int:
    """A REST v1 ``/versions/<v>`` segment, refused with TF Serving's message."""
    value = parse_version(text)
    if value is None:
        raise InvalidArgument(f"Failed to convert version: {text} to numeric.")
    return value


def v2_version(text: str) -> int | None:
    """A KServe V2 version string (REST path or gRPC field); empty means the latest."""
    if not text:
        return None
    value = parse_version(text)
    if value is None:
        raise InvalidArgument(f"model version must be a positive integer, got {text!r}")
    return value
