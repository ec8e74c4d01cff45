"""``corolla predict`` without a server: formatting, argument checks, exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from corolla import client_cli
from corolla.client import Client, ClientError
from corolla.errors import Code


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    client_cli.register(parser.add_subparsers())
    return parser.parse_args(["predict", *argv])


def test_format_top_k() -> None:
    text = client_cli.format_top_k("a.jpg", [("daisy", 0.98765), ("rose", 0.01)])
    assert text.splitlines() == ["a.jpg:", "  1. daisy  0.9877", "  2. rose   0.0100"]


def test_defaults_and_aliases() -> None:
    args = _parse("flowers", "a.jpg", "--protocol=v2-grpc", "--port=9000", "--top-k=2")
    assert (args.model, args.images, args.protocol) == ("flowers", [Path("a.jpg")], "v2-grpc")
    assert (args.grpc_port, args.rest_port, args.top_k, args.version) == (9000, 8501, 2, None)


def test_missing_image_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse("m", str(tmp_path / "missing.jpg"))
    assert args.func(args) == 2
    assert "missing.jpg" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["rest", "grpc", "v2", "v2-grpc"])
def test_unreachable_server_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    protocol: str) -> None:
    image = tmp_path / "x.jpg"
    image.write_bytes(b"\xff\xd8\xff")
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    args = _parse("m", str(image), f"--protocol={protocol}", "--port=9", "--rest_api_port=9",
                  "--host=127.0.0.1", "--timeout=5")
    assert args.func(args) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_unknown_protocol() -> None:
    with pytest.raises(Exception, match="unknown protocol"):
        Client().top_k("m", [b""], protocol="soap")
    assert ClientError("x", Code.NOT_FOUND).code is Code.NOT_FOUND
