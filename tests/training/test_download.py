"""The download path against a real HTTP server on 127.0.0.1 (started here)."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("torch")

from corolla.training.download import (
    ChecksumMismatch,
    DownloadError,
    RemoteArchive,
    download,
    fetch_archive,
)


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for cls in ("daisy", "tulips"):
            for i in range(3):
                data = random.Random(f"{cls}-{i}").randbytes(20_000)  # incompressible
                info = tarfile.TarInfo(f"flower_photos/{cls}/{i}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Server:
    """Serves ``payload`` at /f.tgz with Range support; can cut the first N transfers short."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.cut_after: int | None = None  # bytes sent before dropping the connection
        self.cuts_left = 0
        self.ignore_range = False
        self.requests: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                if self.path != "/f.tgz":
                    self.send_error(404)
                    return
                start = 0
                if rng and not outer.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(outer.payload):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header(
                        "Content-Range",
                        f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}",
                    )
                else:
                    self.send_response(200)
                body = outer.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cuts_left and outer.cut_after is not None:
                    outer.cuts_left -= 1
                    self.wfile.write(body[: outer.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/f.tgz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server(_archive()) as s:
        yield s


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_and_extract(server: Server, tmp_path: Path) -> None:
    remote = RemoteArchive(
        url=server.url,
        sha256=_sha(server.payload),
        size=len(server.payload),
        folder="flower_photos",
    )
    root = fetch_archive(remote, tmp_path, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["daisy", "tulips"]
    assert (root / "tulips" / "2.jpg").read_bytes() == random.Random("tulips-2").randbytes(20_000)
    n = len(server.requests)
    assert fetch_archive(remote, tmp_path, progress=False) == root  # cached: no new request
    assert len(server.requests) == n


def test_interrupted_transfer_resumes_with_range(server: Server, tmp_path: Path) -> None:
    server.cut_after, server.cuts_left = 1000, 2
    dest = tmp_path / "f.tgz"
    download(server.url, dest, sha256=_sha(server.payload), backoff_s=0.01, progress=False)
    assert dest.read_bytes() == server.payload
    assert server.requests == [None, "bytes=1000-", "bytes=2000-"]
    assert not (tmp_path / "f.tgz.part").exists()


def test_resume_from_a_partial_file_left_by_an_earlier_run(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f.tgz.part").write_bytes(server.payload[:5000])
    dest = download(server.url, tmp_path / "f.tgz", sha256=_sha(server.payload), progress=False)
    assert dest.read_bytes() == server.payload
    assert server.requests == ["bytes=5000-"]


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.ignore_range = True
    (tmp_path / "f.tgz.part").write_bytes(b"garbage" * 10)
    dest = download(server.url, tmp_path / "f.tgz", sha256=_sha(server.payload), progress=False)
    assert dest.read_bytes() == server.payload


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ChecksumMismatch):
        download(server.url, tmp_path / "f.tgz", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert len(server.requests) == 1  # a fresh, whole download with a wrong hash: no retry


def test_spliced_resume_with_bad_bytes_retries_from_scratch(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f.tgz.part").write_bytes(b"X" * 3000)  # wrong bytes from an earlier run
    dest = download(server.url, tmp_path / "f.tgz", sha256=_sha(server.payload), progress=False)
    assert dest.read_bytes() == server.payload
    assert server.requests == ["bytes=3000-", None]


def test_gives_up_after_retries(server: Server, tmp_path: Path) -> None:
    server.cut_after, server.cuts_left = 10, 100
    with pytest.raises(DownloadError, match="giving up"):
        download(server.url, tmp_path / "f.tgz", retries=2, backoff_s=0.01, progress=False)
    assert len(server.requests) == 3


def test_missing_file_is_not_retried(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        download(server.url.replace("f.tgz", "nope"), tmp_path / "x", progress=False)
    assert len(server.requests) == 1


def test_unknown_host_is_not_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # An offline machine's resolver (or a typo) says the name does not exist: no backoff.
    import socket

    calls = []

    def no_such_name(*args: object, **kw: object) -> object:
        calls.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with pytest.raises(DownloadError, match="cannot resolve the host name"):
        download("http://example.invalid/f.tgz", tmp_path / "f.tgz", backoff_s=30,
                 progress=False)
    assert len(calls) == 1
