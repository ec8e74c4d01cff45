"""``corolla predict``: send images to a running server and print the top-k labels.

``register(subparsers)`` adds the subcommand; cli.py owns argv. Exit status: 0 on success,
1 when the server answers an error or cannot be reached, 2 for unreadable image files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from corolla.client import PROTOCOLS, Client, TopK
from corolla.errors import CorollaError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "predict", help="classify images with a running server (any of its protocols)",
        description="Send images to a running Corolla server over any of its protocols and "
                    "print the top labels of each, e.g. "
                    "corolla predict flowers photo.jpg --protocol grpc.")
    p.add_argument("model", help="model name")
    p.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG, ...)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="rest",
                   help="rest (TF Serving REST, default), grpc (TF Serving gRPC), "
                        "v2 (KServe V2 REST), v2-grpc (KServe V2 gRPC)")
    p.add_argument("--host", default="localhost", help="server address (default localhost)")
    p.add_argument("--rest_api_port", "--rest-port", type=int, default=8501, dest="rest_port",
                   help="REST port (default 8501)")
    p.add_argument("--port", "--grpc-port", type=int, default=8500, dest="grpc_port",
                   help="gRPC port (default 8500)")
    p.add_argument("--model_version", "--version", type=int, default=None, dest="version",
                   help="ask this version (default: the latest the server has)")
    p.add_argument("--top_k", "--top-k", type=int, default=5, dest="top_k",
                   help="labels to print per image (default 5)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def format_top_k(name: str, rows: TopK) -> str:
    width = max((len(label) for label, _ in rows), default=0)
    lines = [f"{name}:"]
    lines += [f"  {i}. {label:<{width}}  {score:.4f}" for i, (label, score) in
              enumerate(rows, 1)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        print("corolla predict: --top_k must be at least 1", file=sys.stderr)
        return 2
    try:
        images = [path.read_bytes() for path in args.images]
    except OSError as exc:
        print(f"corolla predict: {exc}", file=sys.stderr)
        return 2
    try:
        with Client(args.host, rest_port=args.rest_port, grpc_port=args.grpc_port,
                    timeout=args.timeout) as client:
            results = client.top_k(args.model, images, protocol=args.protocol, k=args.top_k,
                                   version=args.version)
    except CorollaError as exc:
        print(f"corolla predict: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        doc = [{"image": str(path), "top_k": [{"label": lbl, "score": s} for lbl, s in rows]}
               for path, rows in zip(args.images, results, strict=True)]
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(format_top_k(str(path), rows)
                        for path, rows in zip(args.images, results, strict=True)))
    return 0
