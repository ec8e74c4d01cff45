"""Model paths stay inside --allowed_model_roots; URL model names never reach the disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ops_process import fake_model, predict_body, serve

pytestmark = pytest.mark.slow


def _config(*pairs: tuple[str, str]) -> str:
    body = " ".join(f'config {{ name: "{n}" base_path: "{p}" }}' for n, p in pairs)
    return f"model_config_list {{ {body} }}"


def test_base_path_outside_the_roots_fails_the_start(tmp_path: Path) -> None:
    fake_model(tmp_path / "outside" / "m", 1)
    (tmp_path / "roots").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "corolla", "serve", "--port=0", "--rest_api_port=0",
         "--model_name=m", f"--model_base_path={tmp_path / 'roots' / '..' / 'outside' / 'm'}",
         f"--allowed_model_roots={tmp_path / 'roots'}"],
        capture_output=True, text=True, timeout=60, env={"COROLLA_ENABLE_FAKE_RUNTIME": "1",
                                                          "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 2
    assert "outside the allowed model roots" in r.stderr


def test_reloads_and_symlinks_cannot_escape(tmp_path: Path) -> None:
    roots = tmp_path / "models"
    fake_model(roots / "a", 1)
    fake_model(tmp_path / "secret", 1)
    config = tmp_path / "models.config"
    config.write_text(_config(("a", str(roots / "a"))))
    with serve(
        ["--model_config_file=models.config", "--model_config_file_poll_wait_seconds=0.2",
         "--file_system_poll_wait_seconds=0.2", f"--allowed_model_roots={roots}"],
        tmp_path, wait="/readyz",
    ) as s, s.client() as c:  # fmt: skip
        # A reload that points outside the roots is refused; the current models stay.
        config.write_text(_config(("a", str(roots / "a")), ("b", str(tmp_path / "secret"))))
        s.wait_log("outside the allowed model roots", timeout=10)
        assert c.get("/readyz", params={"model": "b"}).status_code == 404
        assert c.post("/v1/models/a:predict", json=predict_body()).status_code == 200
        # A version directory that is a symbolic link out of the roots never loads.
        config.write_text(_config(("a", str(roots / "a"))))
        (roots / "a" / "2").symlink_to(tmp_path / "secret" / "1")
        def refused() -> bool:
            states = c.get("/v1/models/a/versions/2").json().get("model_version_status", [])
            return bool(states) and states[0]["status"]["error_code"] == "PERMISSION_DENIED"

        s.wait_until(refused, "version 2 refused with PERMISSION_DENIED", timeout=10)
        assert c.post("/v1/models/a:predict", json=predict_body()).status_code == 200
        # Names in URLs are looked up, never joined to a path.
        for name in ("..%2F..%2Fsecret", "%2E%2E", "a%2F..%2F..%2Fsecret"):
            r = c.post(f"/v1/models/{name}:predict", json=predict_body())
            assert r.status_code in (400, 404), (name, r.status_code)
