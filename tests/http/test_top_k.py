"""top_k as the REST API reads it from a query, a form field or a JSON body."""

from __future__ import annotations

import pytest

from corolla.errors import InvalidArgument
from corolla.http.tfserving import parse_top_k


@pytest.mark.parametrize(("raw", "k"), [("3", 3), (" 2 ", 2), ("+4", 4), (1, 1), (7, 7),
                                        (2.0, 2), (1e2, 100)])
def test_accepted(raw: object, k: int) -> None:
    assert parse_top_k(raw) == k


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "", "2.5", "1e2", "\u00b2", "+-1", "1_000",
                                 "\u0663", "9" * 5000, 0, -3, True, False, 2.5, float("inf"),
                                 float("-inf"), float("nan"), None, [1], {"k": 1}])
def test_refused(raw: object) -> None:
    with pytest.raises(InvalidArgument, match="top_k must be a positive integer"):
        parse_top_k(raw)
