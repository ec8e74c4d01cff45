"""Version transition policies: pure functions from a snapshot to at most one next action.

Availability-preserving (default, TF Serving's AvailabilityPreservingPolicy): load new aspired
versions first; unload a version that is no longer aspired only once an aspired version is
AVAILABLE (or when nothing is aspired at all). A failed new version therefore never takes the
place of a working one. Resource-preserving: unload what is no longer aspired first, then load.

A *stale* version is AVAILABLE and still aspired, but its source now offers it from another
directory (the model's base path changed, or a store replaced the version's bytes).
Availability-preserving reloads it in place (the new copy loads beside the old one, which keeps
serving until the swap); resource-preserving unloads it first, and the manager then loads the
new copy.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


class State(enum.IntEnum):
    """TF Serving's ModelVersionStatus.State values."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True, kw_only=True)
class VersionSnapshot:
    version: int
    state: State
    aspired: bool
    failed: bool = False  # END because its load failed (as opposed to unloaded)
    stale: bool = False  # AVAILABLE and aspired, but offered from a new directory now


@dataclass(frozen=True, kw_only=True)
class Action:
    kind: Literal["load", "unload", "reload"]
    version: int


PolicyName = Literal["availability_preserving", "resource_preserving"]


def _unloadable(snapshot: Sequence[VersionSnapshot]) -> list[VersionSnapshot]:
    return sorted((s for s in snapshot if not s.aspired and s.state == State.AVAILABLE),
                  key=lambda s: s.version)


def _loadable(snapshot: Sequence[VersionSnapshot]) -> list[VersionSnapshot]:
    return sorted((s for s in snapshot if s.aspired and s.state == State.START),
                  key=lambda s: s.version, reverse=True)


def availability_preserving(snapshot: Sequence[VersionSnapshot]) -> Action | None:
    aspired = [s for s in snapshot if s.aspired]
    unloadable = _unloadable(snapshot)
    if unloadable and (not aspired or any(s.state == State.AVAILABLE for s in aspired)):
        return Action(kind="unload", version=unloadable[0].version)
    loadable = _loadable(snapshot)
    if loadable:
        return Action(kind="load", version=loadable[0].version)
    stale = _stale(snapshot)
    if stale:
        return Action(kind="reload", version=stale[0].version)
    return None


def _stale(snapshot: Sequence[VersionSnapshot]) -> list[VersionSnapshot]:
    return sorted((s for s in snapshot if s.stale and s.state == State.AVAILABLE),
                  key=lambda s: s.version, reverse=True)


def resource_preserving(snapshot: Sequence[VersionSnapshot]) -> Action | None:
    unloadable = _unloadable(snapshot) + _stale(snapshot)
    if unloadable:
        return Action(kind="unload", version=unloadable[0].version)
    # Wait for unloads and loads in flight to finish before loading more.
    if any(s.state in (State.LOADING, State.UNLOADING) for s in snapshot):
        return None
    loadable = _loadable(snapshot)
    if loadable:
        return Action(kind="load", version=loadable[0].version)
    return None


POLICIES = {
    "availability_preserving": availability_preserving,
    "resource_preserving": resource_preserving,
}
