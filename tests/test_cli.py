"""Command line to ServerOptions (corolla.cli, corolla.serve_options): TF Serving's contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from corolla.batching import BatchingOptions
from corolla.cli import build_parser, main
from corolla.config import VersionPolicy
from corolla.errors import CorollaError
from corolla.serve_options import build_server_options
from corolla.server import ServerOptions


def options(argv: list[str], env: dict[str, str] | None = None) -> ServerOptions:
    args = build_parser().parse_args(["serve", *argv])
    opts = build_server_options(args, env or {})
    assert isinstance(opts, ServerOptions)
    return opts


def test_model_name_and_base_path(tmp_path: Path) -> None:
    opts = options(
        [
            "--model_name=colors",
            f"--model_base_path={tmp_path}",
            "--rest_api_port",
            "9001",
            "--port=9000",
        ]
    )
    (m,) = opts.models
    assert (m.name, m.base_path, m.version_policy) == ("colors", str(tmp_path), VersionPolicy())
    assert (opts.rest_api_port, opts.grpc_port) == (9001, 9000)


def test_tf_serving_image_environment(tmp_path: Path) -> None:
    # tensorflow/serving's entrypoint: --model_name=$MODEL_NAME
    # --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME
    env = {"MODEL_NAME": "flowers", "MODEL_BASE_PATH": str(tmp_path)}
    (m,) = options([], env).models
    assert (m.name, m.base_path) == ("flowers", str(tmp_path / "flowers"))
    (m,) = options([], {"MODEL_NAME": "flowers"}).models
    assert m.base_path == "/models/flowers"
    # Flags win over the environment.
    (m,) = options(["--model_name=other", f"--model_base_path={tmp_path}"], env).models
    assert (m.name, m.base_path) == ("other", str(tmp_path))


def test_model_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "models.config"
    cfg.write_text(
        "model_config_list { config { name: 'a' base_path: '/a' model_version_policy { all {} } } }"
    )
    opts = options([f"--model_config_file={cfg}", "--model_config_file_poll_wait_seconds=5"])
    (m,) = opts.models
    assert (m.name, m.version_policy.kind) == ("a", "all")
    assert opts.model_config_file == str(cfg)
    assert opts.model_config_file_poll_wait_seconds == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model_name=x"], "needs --model_base_path"),
        (["--model_config_file=/c", "--model_name=x"], "either --model_config_file"),
        (["--model_config_file=/nonexistent/models.config"], "/nonexistent/models.config"),
        (["--model_name=x", "--model_base_path="], "base_path is empty"),
        (["--model_name=x", "--model_base_path=hdfs://b/m"], "unsupported scheme hdfs://"),
        (["--batching_parameters_file=/nonexistent/b.txt"], "batching_parameters_file"),
    ],
)
def test_bad_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(CorollaError, match=message):
        options(argv)


def test_batching_flags(tmp_path: Path) -> None:
    assert options(["--enable_batching=false"]).batching is None
    assert options(["--batch_dispatch=timeout"]).batching.eager is False  # type: ignore[union-attr]
    params = tmp_path / "batching.txt"
    params.write_text(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 500 }\n"
        "num_batch_threads { value: 3 } allowed_batch_sizes: 4 "
        "allowed_batch_sizes: 8"
    )
    b = options([f"--batching_parameters_file={params}"]).batching
    assert b == BatchingOptions(
        max_batch_size=8,
        batch_timeout_micros=500,
        num_batch_threads=3,
        allowed_batch_sizes=(4, 8),
        eager=False,
    )


def test_retry_and_policy_flags() -> None:
    opts = options(
        [
            "--max_num_load_retries=0",
            "--load_retry_interval_micros=250000",
            "--version_policy_mode=resource_preserving",
            "--max_image_pixels=1000",
        ]
    )
    assert opts.manager.max_load_retries == 0
    assert opts.manager.load_retry_interval == 0.25
    assert opts.manager.policy == "resource_preserving"
    assert opts.image_limits.max_pixels == 1000


def test_fake_runtime_only_with_the_env_switch() -> None:
    assert not options([]).enable_fake_runtime
    assert options([], {"COROLLA_ENABLE_FAKE_RUNTIME": "1"}).enable_fake_runtime


def test_ignored_tf_flags_are_accepted(caplog: pytest.LogCaptureFixture) -> None:
    options(["--tensorflow_session_parallelism=2", "--enable_model_warmup=true"])
    assert "tensorflow_session_parallelism" in caplog.text


def test_unknown_flag_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--model_name=x", "--no_such_flag=1"])
    assert info.value.code == 2
    assert "--no_such_flag" in capsys.readouterr().err


def test_serve_error_exits_2_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model_name=x"]) == 2
    assert "needs --model_base_path" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("machine", "cpus", "argv", "inline", "intra", "solo"),
    [
        (2, 2, [], False, 1, 2),  # the default: one process, two inference threads
        (2, 2, ["--onnx_solo_threads=1"], False, 1, 1),
        (2, 2, ["--rest_workers=2"], True, 1, 1),  # one core per process
        (64, 1, [], True, 1, 1),  # a one-CPU container on a big node
        (64, 1, ["--inline_requests=false"], False, 1, 1),
        (2, 2, ["--inline_requests=true"], True, 1, 2),
        (4, 4, ["--enable_batching=false", "--rest_workers=4"], True, 1, 1),
        (8, 8, ["--rest_workers=2"], False, 1, 4),
        (1, 1, [], True, 0, 1),  # the whole machine is one core: ONNX Runtime's own default
    ],
)
def test_one_core_processes_run_requests_inline_with_one_onnx_thread(
    monkeypatch: pytest.MonkeyPatch, machine: int, cpus: int, argv: list[str], inline: bool,
    intra: int, solo: int,
) -> None:
    """--inline_requests=auto turns on where a process has one core; ONNX Runtime's thread
    count is then explicit, since its own default counts the node's cores, not the quota.
    A request alone in a process with more cores runs on all of them (the solo session)."""
    import corolla.serve_options

    monkeypatch.setattr(corolla.serve_options, "available_cpus", lambda: cpus)
    monkeypatch.setattr(corolla.serve_options.os, "cpu_count", lambda: machine)
    opts = options(argv)
    assert opts.inline_requests is inline
    assert opts.onnx.intra_op_threads == intra
    assert opts.onnx.solo_threads == solo


def test_max_decoded_image_mib(tmp_path: Path) -> None:
    base = [f"--model_base_path={tmp_path}", "--model_name=m"]
    from corolla.service import MAX_DECODED_IMAGE_BYTES

    assert options(base).max_decoded_image_bytes == MAX_DECODED_IMAGE_BYTES == 256 << 20
    assert options([*base, "--max_decoded_image_mib=64"]).max_decoded_image_bytes == 64 << 20
    with pytest.raises(CorollaError, match="max_decoded_image_mib"):
        options([*base, "--max_decoded_image_mib=0"])


@pytest.mark.parametrize("api", ["rest", "grpc"])
@pytest.mark.parametrize("shared", [False, True])
def test_a_port_in_use_exits_1_with_message(tmp_path: Path, api: str, shared: bool,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from corolla.demo_model import write_demo_version

    write_demo_version(tmp_path / "m", 1, size=16)
    with socket.socket() as taken:
        if shared:
            # As another server's processes listen with --rest_workers: a second server with
            # --rest_workers must not join them.
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = ([f"--rest_api_port={port}", "--port=0"] if api == "rest"
                 else ["--rest_api_port=0", f"--port={port}"])
        argv = ["serve", "--host=127.0.0.1", "--model_name=m",
                f"--model_base_path={tmp_path / 'm'}", *ports,
                *(["--rest_workers=2"] if shared else [])]
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on {'127.0.0.1:' if api == 'rest' else 'port '}{port}" in err
    assert ("REST API" if api == "rest" else "gRPC API") in err


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("2", True), ("30", True),
                                           ("0.5", False), ("1", False), ("-1", False),
                                           ("nan", False), ("inf", False)])
def test_worker_watchdog_flag(value: str, ok: bool) -> None:
    argv = ["--model_name=m", "--model_base_path=/tmp/m", "--rest_workers=2",
            f"--rest_worker_watchdog_seconds={value}"]
    if ok:
        assert options(argv).worker_watchdog_seconds == float(value)
    else:
        with pytest.raises(CorollaError, match="rest_worker_watchdog_seconds"):
            options(argv)
