"""Fixtures that start ``corolla serve`` processes (tests/support/corolla_harness.py).

``start_corolla(*args, wait_for=(...))`` starts one and waits until the named models have a
version AVAILABLE (``GET /v1/models/<name>``, bounded); every server a test started is stopped
at teardown with SIGTERM, and one that does not exit promptly fails the test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from corolla_harness import CorollaProcess, StartCorolla, poll


@contextlib.contextmanager
def corolla_servers(workdir: Path) -> Iterator[StartCorolla]:
    started: list[CorollaProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait_for: tuple[str, ...] = (),
        fake_runtime: bool = False,
    ) -> CorollaProcess:
        server = CorollaProcess(list(args), workdir, env=env, fake_runtime=fake_runtime)
        started.append(server)
        for name in wait_for:
            server.wait_available(name)
        return server

    try:
        yield start
    finally:
        problems = []
        for server in started:
            try:
                server.stop()
            except AssertionError as exc:
                problems.append(str(exc))
        if problems:
            raise AssertionError("\n\n".join(problems))


@pytest.fixture
def start_corolla(tmp_path: Path) -> Iterator[StartCorolla]:
    """Start ``corolla serve`` processes for one test; all are stopped at teardown."""
    with corolla_servers(tmp_path) as start:
        yield start


@pytest.fixture(scope="session")
def servers_in() -> Callable[[Path], contextlib.AbstractContextManager[StartCorolla]]:
    """``with servers_in(workdir) as start:`` for fixtures of a wider scope."""
    return corolla_servers


def _models_config(*models: dict[str, Any]) -> str:
    """A models.config (ModelServerConfig text format) for ``models``.

    Each model: name, base_path, and optionally policy ("all", ("latest", n) or ("specific",
    [versions])), labels ({label: version}) and platform.
    """
    lines = ["model_config_list {"]
    for m in models:
        lines.append("  config {")
        lines.append(f'    name: "{m["name"]}"')
        lines.append(f'    base_path: "{m["base_path"]}"')
        if m.get("platform"):
            lines.append(f'    model_platform: "{m["platform"]}"')
        policy = m.get("policy")
        if policy == "all":
            lines.append("    model_version_policy { all {} }")
        elif isinstance(policy, tuple) and policy[0] == "latest":
            lines.append(f"    model_version_policy {{ latest {{ num_versions: {policy[1]} }} }}")
        elif isinstance(policy, tuple) and policy[0] == "specific":
            versions = " ".join(f"versions: {v}" for v in policy[1])
            lines.append(f"    model_version_policy {{ specific {{ {versions} }} }}")
        for label, version in (m.get("labels") or {}).items():
            lines.append(f'    version_labels {{ key: "{label}" value: {version} }}')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _write_config(path: Path, text: str) -> None:
    """Replace a config file atomically, as a ConfigMap update or an editor's save does."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="session")
def models_config() -> Callable[..., str]:
    return _models_config


@pytest.fixture(scope="session")
def write_config() -> Callable[[Path, str], None]:
    return _write_config


@pytest.fixture(scope="session")
def wait() -> Callable[..., Any]:
    """``wait(fn, timeout, what)``: poll ``fn`` until it returns a true value (bounded)."""
    return poll
