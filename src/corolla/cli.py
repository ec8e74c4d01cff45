"""Command line: the only module that reads argv and the environment.

``corolla serve`` takes TensorFlow Serving's flags with their names and meanings
(``--port``, ``--rest_api_port``, ``--model_name``, ``--model_base_path``,
``--model_config_file``...), in ``--flag=value`` or ``--flag value`` form; so does a bare
``corolla --model_name=...`` (as ``tensorflow_model_server`` is called). The tensorflow/serving
image's environment (``MODEL_NAME``, ``MODEL_BASE_PATH``) works too. With no model flags it
serves the embedded default model. Unknown flags and broken config files fail at once.

The flags are declared in :mod:`corolla.serve_flags` and turned into ``ServerOptions`` by
:mod:`corolla.serve_options`; this module reads argv and ``os.environ``, builds the parser of
every command and runs the one asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from corolla import __version__
from corolla.errors import CorollaError
from corolla.logging_setup import quiet_client_loggers
from corolla.serve_flags import add_serve_arguments
from corolla.serve_options import apply_cpus, build_server_options


def cmd_serve(args: argparse.Namespace) -> int:
    if args.print_version:
        print(f"corolla {__version__}")
        return 0
    from corolla.logging_setup import configure_logging
    from corolla.server import ListenError, ServerOptions, serve

    configure_logging(args.log_level, args.log_format)
    try:
        apply_cpus(args, os.environ)
        options = build_server_options(args, dict(os.environ))
    except CorollaError as exc:
        print(f"corolla serve: error: {exc.message}", file=sys.stderr)
        return 2
    assert isinstance(options, ServerOptions)
    try:
        import uvloop
    except ImportError:
        run: Callable[[Any], int] = asyncio.run
    else:
        run = uvloop.run
    try:
        return run(serve(options))
    except ListenError as exc:
        print(f"corolla serve: error: {exc}", file=sys.stderr)
        return 1


def cmd_demo_model(args: argparse.Namespace) -> int:
    from corolla.demo_model import write_demo_version

    path = write_demo_version(args.base_path, args.version, args.size)
    print(path)
    return 0


# What `corolla --help` and `corolla serve --help` say: written for users (the module docstring
# above is for whoever reads this file).
DESCRIPTION = """\
Train image classifiers and serve them as a drop-in replacement for TensorFlow Serving:
its REST and gRPC APIs, flags and model directories, plus KServe V2."""
EPILOG = """\
examples:
  corolla serve              serve the embedded flowers model: REST on :8501, gRPC on :8500
  corolla serve --model_name=mine --model_base_path=models/mine
                             serve a model directory of your own (models/mine/1/, 2/, ...)
  corolla train photos --output models/mine
                             train on photos/<class>/*.jpg, publish models/mine/<n>/
  corolla predict flowers photo.jpg
                             ask a running server for the top labels of a photo

'corolla COMMAND --help' shows a command's options. Flags alone ('corolla --port=8500 ...')
mean 'corolla serve', as tensorflow_model_server is called.
"""
SERVE_DESCRIPTION = (
    "Serve models over TensorFlow Serving's REST API (default port 8501, or $PORT when set) "
    "and gRPC API (default port 8500), with KServe V2 on both ports. Flags have TF Serving's "
    "names and take --flag=value or --flag value; the tensorflow/serving image's MODEL_NAME and "
    "MODEL_BASE_PATH environment variables work too. With no model flags, the embedded flowers "
    "model is served. Unknown flags and broken config files fail at once.")
DEMO_DESCRIPTION = (
    "Write a tiny real classifier, which names the dominant colour of a photo (red, green, "
    "blue, white, black), as the next version under BASE_PATH: a model to serve in a minute, "
    "without training.")


# Modules that add more commands (each has register(subparsers)).
COMMAND_MODULES = ("corolla.training.cli", "corolla.client_cli", "corolla.convert_cli",
                   "corolla.storage.cli")


def build_parser(*, serve_only: bool = False) -> argparse.ArgumentParser:
    """``serve_only``: without COMMAND_MODULES (their imports cost a starting server ~0.3 s)."""
    parser = argparse.ArgumentParser(prog="corolla", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", action="version", version=f"corolla {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve models (TensorFlow Serving compatible)",
                           description=SERVE_DESCRIPTION,
                           usage="corolla serve [--flag=value ...]")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    demo = sub.add_parser("make-demo-model",
                          help="write the small colour classifier as a version under BASE_PATH",
                          description=DEMO_DESCRIPTION)
    demo.add_argument("base_path", metavar="BASE_PATH",
                      help="model base path (created if missing), e.g. models/demo")
    demo.add_argument("--version", type=int, default=None,
                      help="version number (default: one above the highest in BASE_PATH)")
    demo.add_argument("--size", type=int, default=64,
                      help="input height and width in pixels (default 64)")
    demo.set_defaults(func=cmd_demo_model)
    for module in () if serve_only else COMMAND_MODULES:
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_client_loggers()
    if not argv or (argv[0].startswith("--") and argv[0] not in ("--help", "-h")):
        argv = ["serve", *argv]  # tensorflow_model_server style: flags only
    parser = build_parser(serve_only=argv[0] == "serve")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except CorollaError as exc:
        print(f"corolla {args.command}: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
