"""The README's examples, run as written against a live server, so the README cannot rot.

Every ``sh`` and ``python`` block of the README's "Quick start" and "Every way in" sections
runs unchanged, in a scratch directory holding ``sunflower.jpg`` and a ``.venv`` link to this
interpreter's environment, against ``.venv/bin/corolla serve`` with no flags (what ``make serve``
runs) on the default ports 8500 and 8501. Two lines are not run: ``make serve`` itself (the test
starts that server) and the line that downloads ``sunflower.jpg`` (tests have no network; the
test puts a photo there instead: a sunflower from the development photos when they are next to
the project, else a generated image).

The default ports may be taken on a shared machine, so the server and the examples run in a
private network namespace (``unshare --net``: root, or unprivileged user namespaces), where
loopback is theirs alone. Without one the test is skipped. The module doubles as the script that
runs inside the namespace (``python test_readme.py WORKDIR``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUN_SECTIONS = ("Quick start", "Every way in")
FLOWERS = REPO.parent / "shared" / "datasets" / "flower_photos"
if not FLOWERS.is_dir():
    FLOWERS = Path("/work/shared/datasets/flower_photos")
LABELS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
DOWNLOAD = re.compile(r"^curl .*https://\S+$")


def readme_blocks(text: str) -> list[tuple[str, str, str]]:
    """(section, language, code) of every fenced block, in order."""
    blocks, section = [], ""
    fence = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
    pos = 0
    for m in fence.finditer(text):
        for heading in re.findall(r"^## (.+)$", text[pos:m.start()], re.M):
            section = heading.strip()
        blocks.append((section, m.group(1), m.group(2)))
        pos = m.end()
    return blocks


def runnable_examples(text: str) -> list[tuple[str, str]]:
    """(language, code) of the blocks to run, without ``make ...`` and download lines."""
    out = []
    for section, lang, code in readme_blocks(text):
        if section not in RUN_SECTIONS or lang not in ("sh", "python"):
            continue
        if lang == "sh":
            lines = [ln for ln in code.splitlines()
                     if not ln.startswith("make ") and not DOWNLOAD.match(ln)]
            code = "\n".join(lines).strip()
        if code:
            out.append((lang, code))
    return out


def test_readme_has_every_way_in() -> None:
    text = README.read_text()
    assert len(text.encode()) < 12 * 1024, "the README is meant to stay under ~12 KB"
    examples = "\n".join(code for _, code in runnable_examples(text))
    for needle in ("Content-Type: image/jpeg", '{"b64"', "base64 <", "-F file=@",
                   "/v2/models/flowers/infer", "--protocol grpc", "PredictionServiceStub",
                   "urllib.request"):
        assert needle in examples, needle
    downloads = [ln for _, _, code in readme_blocks(text) for ln in code.splitlines()
                 if DOWNLOAD.match(ln)]
    assert len(downloads) == 1 and "sunflower.jpg" in downloads[0]


def _namespace_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for flags in (["--net"], ["--net", "--map-root-user"]):
            if subprocess.run(["unshare", *flags, "true"], capture_output=True,
                              timeout=10).returncode == 0:
                return True
    return False


def _unshare_flags() -> list[str]:
    ok = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    return ["--net"] if ok.returncode == 0 else ["--net", "--map-root-user"]


def _sunflower(dest: Path) -> bool:
    """Put a photo at ``dest``; True when it is a real sunflower photo."""
    folder = FLOWERS / "sunflowers"
    if folder.is_dir():
        shutil.copyfile(sorted(folder.glob("*.jpg"))[0], dest)
        return True
    from PIL import Image

    Image.new("RGB", (320, 240), (230, 190, 30)).save(dest, "JPEG")
    return False


@pytest.mark.slow
@pytest.mark.skipif(not _namespace_works(), reason="needs a private network namespace (unshare)")
@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl")
def test_readme_examples_run_as_written(tmp_path: Path) -> None:
    examples = runnable_examples(README.read_text())
    real_photo = _sunflower(tmp_path / "sunflower.jpg")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (tmp_path / "examples.json").write_text(json.dumps(examples))
    proc = subprocess.run(
        ["unshare", *_unshare_flags(), sys.executable, __file__, str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == len(examples) >= 9
    for (lang, code), (rc, out, err) in zip(examples, results, strict=True):
        where = (f"README {lang} example:\n{code}\nexit {rc}\n"
                 f"stdout: {out[-1500:]}\nstderr: {err[-1500:]}")
        assert rc == 0 and out.strip(), where
        assert '"error"' not in out, where
        answer = _answered_label(out)
        assert answer in LABELS, where
        if real_photo:
            assert answer == "sunflowers", where


def _answered_label(out: str) -> str | None:
    """The best label an example printed: from labels in its output, or a list of scores."""
    text = out.strip()
    if text.startswith("[") and not text.startswith("[{"):
        with contextlib.suppress(ValueError):
            scores = json.loads(text)
            if len(scores) == len(LABELS) and all(isinstance(s, float) for s in scores):
                return LABELS[max(range(len(scores)), key=scores.__getitem__)]
    found = [(text.find(label), label) for label in LABELS if label in text]
    return min(found)[1] if found else None


# ---- inside the namespace -------------------------------------------------------------------

def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def _wait_serving(proc: subprocess.Popen[bytes], timeout: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel("localhost:8500") as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        for resp in watch:
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return
            if proc.poll() is not None:
                break
    raise RuntimeError("corolla serve did not become ready")


def run_inside(workdir: Path) -> int:
    os.chdir(workdir)
    _loopback_up()
    examples = json.loads(Path("examples.json").read_text())
    # A shell where the README is pasted has none of these; each would move the server.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PORT", "MODEL_NAME", "MODEL_BASE_PATH")}
    with open("server.log", "wb") as log:
        server = subprocess.Popen([".venv/bin/corolla", "serve"], stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
    try:
        _wait_serving(server, 90.0)
        results = []
        for lang, code in examples:
            cmd = (["bash", "-euo", "pipefail", "-c", code] if lang == "sh"
                   else [".venv/bin/python", "-c", code])
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            results.append((done.returncode, done.stdout, done.stderr))
        Path("results.json").write_text(json.dumps(results))
    except Exception:
        sys.stdout.write(Path("server.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(run_inside(Path(sys.argv[1])))
