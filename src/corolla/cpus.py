"""How many CPUs this process may really use: what it was given, the affinity and the CPU quota.

``os.cpu_count()`` sees the node's cores; a container limited to 2 CPUs on a 64-core node
must size its thread pools for 2, or it thrashes. Without a CPU limit (the usual Kubernetes
setup: a request, no limit, to avoid CFS throttling) neither the affinity mask nor the cgroup
says what the pod was given, so the count can be set from outside: the ``COROLLA_CPUS``
environment variable (the pod's ``requests.cpu`` through the Downward API; ``corolla serve
--cpus`` sets it for the server and its worker processes). It can only lower the count: the
affinity mask and the CPU quota stay upper bounds, since threads beyond them only contend.

:func:`available_cpus` is the one function that every thread pool, ONNX Runtime's thread
counts and the REST worker count are sized from. It reads the environment on each call (no
module state), so it is safe from any thread or process.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

CPUS_ENV = "COROLLA_CPUS"


def parse_cpus(text: str) -> float:
    """A CPU count as Kubernetes writes it: ``2``, ``1.5``, ``500m``; ValueError otherwise."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 1000 if t.endswith("m") else float(t)
    except ValueError:
        raise ValueError(f"not a CPU count: {text!r} (examples: 2, 1.5, 500m)") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"a CPU count must be positive, got {text!r}")
    return value


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
        period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        if int(quota) > 0:
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    return None


def detected_cpus() -> int:
    """The affinity mask, capped by the cgroup CPU quota (rounded up); at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def available_cpus() -> int:
    """CPUs to size for: ``COROLLA_CPUS`` (rounded up) when set, within :func:`detected_cpus`.

    A value that does not parse is ignored here (``corolla serve`` refuses it at start).
    """
    n = detected_cpus()
    given = os.environ.get(CPUS_ENV, "").strip()
    if given:
        with contextlib.suppress(ValueError):
            n = min(n, max(1, math.ceil(parse_cpus(given) - 1e-9)))
    return n
