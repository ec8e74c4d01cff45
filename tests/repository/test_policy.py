"""Version transition policies as tables (corolla.repository.policy): no threads, no clocks."""

from __future__ import annotations

import pytest

from corolla.repository.policy import (
    POLICIES,
    Action,
    State,
    VersionSnapshot,
    availability_preserving,
    resource_preserving,
)

S, L, A, U, E = State.START, State.LOADING, State.AVAILABLE, State.UNLOADING, State.END


def snap(
    *versions: tuple[int, State, bool] | tuple[int, State, bool, bool],
) -> list[VersionSnapshot]:
    """(version, state, aspired[, failed])"""
    return [
        VersionSnapshot(
            version=v[0], state=v[1], aspired=v[2], failed=v[3] if len(v) > 3 else False
        )  # type: ignore[misc]
        for v in versions
    ]


def load(v: int) -> Action:
    return Action(kind="load", version=v)


def unload(v: int) -> Action:
    return Action(kind="unload", version=v)


def reload(v: int) -> Action:
    return Action(kind="reload", version=v)


def stale(v: int) -> VersionSnapshot:
    return VersionSnapshot(version=v, state=State.AVAILABLE, aspired=True, stale=True)


# (name, snapshot, availability_preserving, resource_preserving)
TABLE = [
    ("nothing", snap(), None, None),
    ("first load", snap((1, S, True)), load(1), load(1)),
    ("newest first", snap((1, S, True), (3, S, True), (2, S, True)), load(3), load(3)),
    ("steady", snap((1, A, True)), None, None),
    ("steady two", snap((1, A, True), (2, A, True)), None, None),
    # v2 published; v1 no longer aspired.
    ("swap: load new first", snap((1, A, False), (2, S, True)), load(2), unload(1)),
    ("swap: new loading", snap((1, A, False), (2, L, True)), None, unload(1)),
    ("swap: then unload old", snap((1, A, False), (2, A, True)), unload(1), unload(1)),
    ("swap done", snap((1, E, False), (2, A, True)), None, None),
    ("resource: wait for unload", snap((1, U, False), (2, S, True)), load(2), None),
    ("resource: load after unload", snap((1, E, False), (2, S, True)), load(2), load(2)),
    # A broken new version never displaces a working one.
    ("failed new version", snap((1, A, False), (2, E, True, True)), None, unload(1)),
    ("failed, still nothing", snap((2, E, True, True)), None, None),
    # Model removed: nothing aspired, unload everything, oldest first.
    ("removed", snap((1, A, False), (2, A, False)), unload(1), unload(1)),
    ("removed, one left", snap((1, E, False), (2, A, False)), unload(2), unload(2)),
    # Latest 2: v3 arrives, v1 goes once something aspired is available.
    ("latest2 roll", snap((1, A, False), (2, A, True), (3, S, True)), unload(1), unload(1)),
    ("latest2 roll, v1 gone", snap((1, E, False), (2, A, True), (3, S, True)), load(3), load(3)),
    ("resource waits for a load", snap((2, L, True), (3, S, True)), load(3), None),
    ("unaspired but not loaded", snap((1, S, False), (2, A, True)), None, None),
    ("loading then unaspired", snap((1, L, False), (2, A, True)), None, None),
    # A stale version (offered from a new directory): reloaded in place, or unloaded first.
    ("stale", [stale(1)], reload(1), unload(1)),
    ("stale after new loads", [stale(1), *snap((2, S, True))], load(2), unload(1)),
    ("stale newest first", [stale(1), stale(2)], reload(2), unload(2)),
]


@pytest.mark.parametrize(
    ("name", "snapshot", "avail", "resource"), TABLE, ids=[row[0] for row in TABLE]
)
def test_policies(
    name: str, snapshot: list[VersionSnapshot], avail: Action | None, resource: Action | None
) -> None:
    assert availability_preserving(snapshot) == avail
    assert resource_preserving(snapshot) == resource


def test_policies_are_pure() -> None:
    snapshot = snap((1, A, False), (2, S, True))
    before = list(snapshot)
    for _ in range(3):
        assert availability_preserving(snapshot) == load(2)
    assert snapshot == before


def test_registry() -> None:
    assert {
        "availability_preserving": availability_preserving,
        "resource_preserving": resource_preserving,
    } == POLICIES
