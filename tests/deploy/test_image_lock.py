"""The image's dependency locks: complete, hash-pinned, and used as such by the Dockerfiles.

- deploy/requirements.lock pins, with hashes, every dependency of the server and of its
  ``storage`` extra (the image reads buckets directly), at versions that satisfy pyproject.toml;
  deploy/build-requirements.lock the build tools of build-requirements.in; the compose store's
  lock moto.
- The Dockerfiles install them with ``--require-hashes`` and nothing unpinned besides.
(Whether the locks are the newest that fit is scripts/lock-image-deps.sh's business.)
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

packaging = pytest.importorskip("packaging.requirements")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _lock(path: Path) -> dict[str, str]:
    """{name: version} of a pip-compile style lock; every requirement must carry hashes."""
    text = path.read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.strip().splitlines()[0] if block.strip() else ""
        if not first or first.startswith("#"):
            continue
        req = Requirement(first.rstrip(" \\"))
        spec = str(req.specifier)
        assert spec.startswith("=="), f"{path.name}: {first} is not pinned"
        assert "--hash=sha256:" in block, f"{path.name}: {req.name} has no hash"
        pins[canonicalize_name(req.name)] = spec[2:]
    return pins


def _requirements(reqs: list[str]) -> list[Requirement]:
    return [r for r in map(Requirement, reqs) if r.marker is None or r.marker.evaluate()]


def test_runtime_lock_covers_the_server_and_its_storage_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _lock(DEPLOY / "requirements.lock")
    wanted = _requirements(project["dependencies"])
    wanted += _requirements(project["optional-dependencies"]["storage"])
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in deploy/requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} does not satisfy {req}: run scripts/lock-image-deps.sh"
        )
    assert not {"torch", "tensorflow", "tensorflow-cpu", "pytest"} & set(pins)


def test_build_and_store_locks() -> None:
    build = _lock(DEPLOY / "build-requirements.lock")
    assert {"setuptools", "wheel", "cyclonedx-bom"} <= set(build)
    assert "moto" in _lock(DEPLOY / "compose" / "store-requirements.lock")


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "compose/store.Dockerfile"])
def test_dockerfiles_install_only_hashed_requirements(dockerfile: str) -> None:
    text = (DEPLOY / dockerfile).read_text()
    installs = re.findall(r"pip(?: --python \S+)? install ([^\n\\]*(?:\\\n[^\n\\]*)*)", text)
    assert installs
    for args in installs:
        args = " ".join(args.replace("\\\n", " ").split())
        assert "--no-deps" in args, args
        # Either a locked file with hashes, or the wheel just built from this repository.
        assert ("--require-hashes" in args and "-r " in args) or "/tmp/dist/" in args, args
