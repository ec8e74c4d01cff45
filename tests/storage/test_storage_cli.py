"""corolla push / fetch-model / versions against real stores: results, retries, exit codes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from storage_servers import Outage

from corolla.cli import main
from corolla.demo_model import write_demo_version
from corolla.model_dir import read_metadata
from corolla.model_publish import verify_files
from corolla.storage.cli import EXIT_CORRUPT, EXIT_NOT_FOUND, EXIT_UNREACHABLE
from corolla.storage.uri import open_store


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return Path(write_demo_version(str(tmp_path / "src"), 1, 16))


def test_push_fetch_list_delete(store_uri: Callable[[str], str], demo: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    uri = store_uri("s3")
    assert main(["push", str(demo), uri]) == 0
    assert main(["push", str(demo), uri, "--version", "5"]) == 0
    assert capsys.readouterr().out.split() == [f"{uri}/1", f"{uri}/5"]
    dest = tmp_path / "models"
    assert main(["fetch-model", uri, str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["5"]
    verify_files(dest / "5", read_metadata(dest / "5").files)
    assert main(["fetch-model", uri, str(dest), "--version", "all"]) == 0
    out = capsys.readouterr().out
    assert "5 (already there, verified)" in out and f"{dest}/1" in out
    assert main(["versions", "list", uri]) == 0
    table = capsys.readouterr().out
    assert "complete (manifest)" in table and table.count("\n") == 3
    assert main(["versions", "delete", uri, "5"]) == 0
    assert sorted(open_store(uri).list_versions()) == [1]


def test_fetch_not_found(store_uri: Callable[[str], str], demo: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    uri = store_uri("s3")
    assert main(["fetch-model", uri, str(tmp_path / "d")]) == EXIT_NOT_FOUND
    assert main(["push", str(demo), uri]) == 0
    assert main(["fetch-model", uri, str(tmp_path / "d"), "--version", "9"]) == EXIT_NOT_FOUND
    assert "no version 9" in capsys.readouterr().err


def test_fetch_retries_until_the_store_answers(redis_port: int, demo: Path,
                                               tmp_path: Path) -> None:
    relay = Outage(redis_port)
    uri = f"redis://127.0.0.1:{relay.port}/0/fetch-retry/m"
    assert main(["push", str(demo), uri]) == 0
    relay.stop()
    timer = threading.Timer(1.5, relay.start)  # back after the first retry
    timer.start()
    try:
        assert main(["fetch-model", uri, str(tmp_path / "d"), "--retries", "4"]) == 0
    finally:
        timer.join()
    assert (tmp_path / "d" / "1" / "model.onnx").exists()
    relay.stop()
    code = main(["fetch-model", uri, str(tmp_path / "e"), "--retries", "1"])
    assert code == EXIT_UNREACHABLE and not (tmp_path / "e" / "1").exists()


def test_cli_output_never_shows_a_store_password(redis_port: int, demo: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    relay = Outage(redis_port)
    uri = f"redis://default:s3cret@127.0.0.1:{relay.port}/0/fetch-redact/m"
    assert main(["push", str(demo), uri]) == 0
    assert main(["versions", "list", uri]) == 0
    relay.stop()
    assert main(["fetch-model", uri, str(tmp_path / "d"), "--retries", "1"]) == EXIT_UNREACHABLE
    out = capsys.readouterr()
    logged = out.err + caplog.text
    assert "s3cret" not in out.out + logged
    assert "default:***@" in out.out
    # The retry warning names the store once (the store's own message already does).
    retry = next(line for line in logged.splitlines() if "try 1 of 2" in line)
    assert retry.count("fetch-redact/m") == 1, retry


def test_storage_clients_info_lines_stay_quiet(store_uri: Callable[[str], str],
                                               demo: Path) -> None:
    """boto3 logged 'Found credentials in environment variables.' on every command: the
    storage clients' loggers pass warnings only at the CLI's INFO level."""
    import logging

    assert main(["push", str(demo), store_uri("s3")]) == 0
    for name in ("botocore", "botocore.credentials", "boto3", "google.auth", "urllib3"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    assert logging.getLogger("botocore").level == logging.WARNING  # set, not inherited


def test_fetch_refuses_a_corrupt_version(store_uri: Callable[[str], str], demo: Path,
                                         tmp_path: Path) -> None:
    uri = store_uri("gs")
    assert main(["push", str(demo), uri]) == 0
    store = open_store(uri)
    data = bytearray((demo / "model.onnx").read_bytes())
    data[-1] ^= 1
    store._put_bytes(store.key(1, "model.onnx"), bytes(data))  # type: ignore[attr-defined]
    dest = tmp_path / "d"
    assert main(["fetch-model", uri, str(dest)]) == EXIT_CORRUPT
    assert list(dest.iterdir()) == []  # nothing half-written is left


def test_fetch_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fetch-model", "--help"])
    out = capsys.readouterr().out
    for text in ("3  not found", "4  store unreachable", "5  a version failed verification",
                 "--version"):
        assert text in out


def test_bad_version_argument(tmp_path: Path) -> None:
    assert main(["fetch-model", str(tmp_path), str(tmp_path / "d"), "--version", "x"]) == 2


@pytest.mark.train
def test_train_output_to_a_store(store_uri: Callable[[str], str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, colour in {"blue": (30, 30, 200), "red": (200, 30, 30)}.items():
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(rng.normal(colour, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{i}.jpg")
    uri = store_uri("redis")
    argv = ["train", str(tmp_path / "photos"), "--output", uri, "--workdir",
            str(tmp_path / "work"), "--split", "0.5,0.25,0.25", "--arch", "small_cnn",
            "--epochs", "1", "--batch-size", "8", "--quantize", "none"]
    assert main(argv) == 0
    assert f"published {uri}/1" in capsys.readouterr().out.splitlines()
    store = open_store(uri)
    from corolla.storage import transfer

    plan = transfer.plan(store, store.list_versions()[1])
    assert plan.manifest is not None and "model.onnx" in plan.manifest
    store.close()
