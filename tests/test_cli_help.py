"""``corolla --help`` and every subcommand's ``--help``: written for users.

No module docstring as the description, no reStructuredText markup, the subcommands listed with
examples, and every subcommand's help printing and exiting 0.
"""

from __future__ import annotations

import argparse
import re

import pytest

from corolla.cli import build_parser, main

MARKUP = re.compile(r"``|:func:|:class:|:meth:|:mod:")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_main_help_is_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["--help"], capsys)
    description = out.split("\n\n")[1]
    assert description.startswith("Train image classifiers and serve them")
    assert "argv" not in out and "only module" not in out
    assert not MARKUP.search(out)
    for command in _subcommands():
        assert command in out
    assert "examples:" in out and "corolla serve --model_name=" in out


def test_every_subcommand_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _subcommands()
    assert {"serve", "train", "evaluate", "predict", "convert", "make-demo-model"} <= set(commands)
    for command, sub in commands.items():
        out = _help([command, "--help"], capsys)
        assert sub.description, f"corolla {command} --help has no description"
        assert not MARKUP.search(out), f"corolla {command} --help shows markup:\n{out}"
        assert "usage: corolla " + command in out


def test_serve_help_says_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["serve", "--help"], capsys)
    assert out.startswith("usage: corolla serve [--flag=value ...]")
    assert "8501" in out and "8500" in out and "embedded flowers model" in out
    assert "[--enable_batching [BOOL]]" not in out and "--enable_batching [BOOL]" in out


def test_help_texts_leave_flag_behaviour_alone() -> None:
    args = build_parser().parse_args(["serve", "--enable_batching=false", "--access_log"])
    assert args.enable_batching is False and args.access_log is True
    demo = build_parser().parse_args(["make-demo-model", "models/x", "--size", "16"])
    assert (demo.base_path, demo.size, demo.version) == ("models/x", 16, None)
