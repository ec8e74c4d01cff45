"""``corolla train`` and ``corolla evaluate``: argument parsing only.

:func:`register` adds both subcommands to the main CLI's subparsers; each sets ``func`` to a
callable taking the parsed Namespace and returning an exit code. Nothing heavy is imported at
module import time (torch is imported inside the commands), so a serving-only install still
runs ``corolla --help``. ``python -m corolla.training.cli`` runs these two on their own.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corolla.training.data import SplitSpec

PRESETS: dict[str, dict[str, Any]] = {  # recipe -> defaults that the command line may override
    "cached": {
        "epochs": 4,
        "lr": 1e-3,
        "batch_size": 64,
        "weight_decay": 0.05,
        "label_smoothing": 0.1,
        "patience": 2,
        "schedule": "cosine",
        "warmup_epochs": 0.3,
    },
    "full": {
        "epochs": 20,
        "lr": 1e-3,
        "batch_size": 32,
        "weight_decay": 0.05,
        "label_smoothing": 0.1,
        "patience": 5,
        "schedule": "cosine",
        "warmup_epochs": 1.0,
    },
    "scratch": {
        "epochs": 40,
        "lr": 1e-3,
        "batch_size": 32,
        "weight_decay": 0.0,
        "label_smoothing": 0.0,
        "patience": 8,
        "schedule": "constant",
        "warmup_epochs": 0.0,
    },
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = subparsers.add_parser(
        "train",
        help="train an image classifier and publish a version",
        description="Train an image classifier on DATA_DIR/<class>/<images> (or a downloaded "
        "--dataset), export it to ONNX, evaluate it on a held-out split through the server's own "
        "decode and runtime, and publish it as the next version under --output "
        "(OUTPUT/1/, OUTPUT/2/, ...), where a running 'corolla serve' picks it up. The version "
        "directory holds the evaluation report and plots; the last line printed says where. "
        "Example: corolla train photos --output models/mine",
    )
    t.add_argument(
        "data_dir", nargs="?", type=Path, metavar="DATA_DIR", help="one folder per class"
    )
    t.add_argument("--dataset", choices=["tf_flowers"], help="download a public dataset instead")
    t.add_argument("--cache-dir", type=Path, default=None, help="download cache (~/.cache/corolla)")
    t.add_argument("--output", "-o", type=_output, required=True,
                   help="model base path: a directory, or a store (s3://, gs://, redis://; "
                        "the version is built under --workdir, then pushed: docs/storage.md)")
    t.add_argument(
        "--arch",
        default="efficientnet_lite0",
        choices=["efficientnet_lite0", "small_cnn"],
        help="efficientnet_lite0: transfer learning from ImageNet weights (default); small_cnn: "
        "the TensorFlow tutorials' small CNN, trained from scratch",
    )
    t.add_argument(
        "--recipe",
        choices=list(PRESETS),
        default=None,
        help="cached (CPU default for efficientnet_lite0), full (fine-tune "
        "everything; default on a GPU), scratch (small_cnn)",
    )
    for name, typ in (
        ("epochs", int),
        ("lr", float),
        ("batch-size", int),
        ("weight-decay", float),
        ("label-smoothing", float),
        ("patience", int),
    ):
        t.add_argument(f"--{name}", type=typ, default=None, help="overrides the recipe preset")
    t.add_argument(
        "--schedule",
        choices=["cosine", "constant"],
        default=None,
        help="learning-rate schedule (overrides the recipe preset)",
    )
    t.add_argument("--views", type=int, default=6, help="cached: augmented views per image")
    t.add_argument(
        "--train-from-block",
        type=int,
        default=12,
        help="cached: first EfficientNet block that is trained (0-15; default 12)",
    )
    t.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    t.add_argument(
        "--split",
        default="0.75,0.10,0.15",
        help="train,validation,test fractions (default 0.75,0.10,0.15)",
    )
    t.add_argument("--split-seed", type=int, default=0, help="seed of the split (default 0)")
    t.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="feature caches and checkpoints (default: runs/<output name>)",
    )
    t.add_argument("--resume", action="store_true", help="resume from the workdir's checkpoint")
    t.add_argument(
        "--refit",
        action="store_true",
        help="train on train + validation for the fixed --epochs and keep the last epoch (no "
        "early stopping); for a recipe already chosen on validation. The test split stays "
        "held out",
    )
    t.add_argument(
        "--quantize",
        choices=["auto", "int8", "none"],
        default="auto",
        help="auto (default): write an int8 graph beside fp32 and serve it by default if its "
        "validation accuracy is within 0.5 points of fp32's; int8: serve int8 whatever it "
        "costs; none: fp32 only",
    )
    t.add_argument(  # before --quantize auto existed; now the same as --quantize int8
        "--serve-quantized", action="store_true", help=argparse.SUPPRESS
    )
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    t.add_argument("--workers", type=int, default=0, help="DataLoader workers (pixel recipes)")
    t.add_argument(
        "--threads", type=int, default=2, help="CPU threads for torch/ONNX Runtime (default 2)"
    )
    t.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they are shown only on a terminal; elsewhere each epoch is "
        "one plain line)",
    )
    t.set_defaults(func=train_command)

    e = subparsers.add_parser(
        "evaluate",
        help="evaluate an exported model version on photos",
        description="Measure a published model version on labelled photos, exactly as the "
        "server runs it (its decode, preprocessing and ONNX Runtime): classification report, "
        "metrics JSON with every misclassified file, confusion matrix. The reports go into "
        "VERSION_DIR/eval-<split>/ unless --output says where. Example: corolla evaluate "
        "models/mine/1 photos --split test",
    )
    e.add_argument(
        "version_dir",
        type=Path,
        metavar="VERSION_DIR",
        help="a model version directory (<base>/<n>)",
    )
    e.add_argument(
        "data_dir",
        type=Path,
        metavar="DATA_DIR",
        help="one folder per class (names = model labels)",
    )
    e.add_argument(
        "--split",
        choices=["all", "train", "validation", "test"],
        default="all",
        help="evaluate one split, recomputed from the model's recorded split rule",
    )
    e.add_argument(
        "--output",
        "-o",
        "--out",
        type=Path,
        default=None,
        dest="out",
        help="report folder (default: VERSION_DIR/eval-<split>)",
    )
    e.add_argument("--graph-variant", default="auto",
                   help="the version's graph to evaluate (fp32, int8; auto: its default)")
    e.add_argument(
        "--no-progress", action="store_true", help="no progress bar (shown only on a terminal)"
    )
    e.set_defaults(func=evaluate_command)


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: elsewhere (a log file, CI, a container's output) their
    carriage returns would fill the log, so each epoch is one plain log line instead."""
    return not args.no_progress and sys.stderr.isatty()


REPORT_FILES = "classification_report.txt, metrics.json, confusion_matrix.png"


def _logging() -> None:
    # INFO for Corolla's own steps; libraries (onnxruntime.quantization is chatty) stay quieter.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("corolla").setLevel(logging.INFO)


def train_command(args: argparse.Namespace) -> int:
    _logging()

    from corolla.training.data import DatasetError
    from corolla.training.download import DownloadError

    problem = _train_args_problem(args)
    if problem:
        print(f"corolla train: error: {problem}", file=sys.stderr)
        return 2
    try:
        return _train(args)
    except (DatasetError, DownloadError) as exc:
        print(f"corolla train: error: {exc}", file=sys.stderr)
        return 2


def _split_spec(args: argparse.Namespace) -> SplitSpec:
    """``--split`` and ``--split-seed`` as a SplitSpec; ValueError if they do not make one."""
    from corolla.training.data import SplitSpec

    parts = [float(x) for x in args.split.split(",")]
    if len(parts) != 3:
        raise ValueError("three fractions")
    return SplitSpec(fractions=(parts[0], parts[1], parts[2]), seed=args.split_seed)


def _output(text: str) -> Path | str:
    """--output: a local base path, or a store URI (kept as text)."""
    from corolla.storage.uri import is_remote

    return text.rstrip("/") if is_remote(text) else Path(text)


def _train_args_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, found before any work starts (None: nothing)."""
    if (args.data_dir is None) == (args.dataset is None):
        return "give DATA_DIR or --dataset (not both)"
    if args.data_dir is not None and not args.data_dir.is_dir():
        return f"DATA_DIR {args.data_dir} does not exist or is not a directory"
    if isinstance(args.output, str):  # a store: its client must be there before training
        from corolla.errors import CorollaError
        from corolla.storage.uri import require_client

        try:
            require_client(args.output)
        except CorollaError as exc:
            return exc.message
    elif args.output.exists() and not args.output.is_dir():
        return f"--output {args.output} exists and is not a directory (the model base path)"
    for name in ("epochs", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name.replace('_', '-')} must be at least 1, got {value}"
    if args.patience is not None and args.patience < 0:
        return f"--patience must be 0 or more, got {args.patience}"
    if args.lr is not None and args.lr <= 0:
        return f"--lr must be positive, got {args.lr}"
    if args.views < 1:
        return f"--views must be at least 1, got {args.views}"
    if args.recipe == "cached" and args.arch != "efficientnet_lite0":
        return "--recipe cached needs a pretrained backbone: --arch efficientnet_lite0"
    try:
        _split_spec(args)
    except ValueError as exc:
        return (f"--split {args.split!r}: three non-negative fractions for train, validation "
                f"and test that sum to 1 ({exc})")
    return None


def _train(args: argparse.Namespace) -> int:
    from corolla.training.pipeline import TrainJob, run
    from corolla.training.recipes import RecipeConfig
    from corolla.training.train import FitConfig, pick_device

    data_dir = args.data_dir
    if args.dataset == "tf_flowers":
        from corolla.training.download import fetch_tf_flowers

        data_dir = fetch_tf_flowers(args.cache_dir, progress=_progress(args))
    device = pick_device(args.device)
    recipe = args.recipe or (
        "scratch" if args.arch == "small_cnn" else "full" if device.startswith("cuda") else "cached"
    )
    p = dict(PRESETS[recipe])
    for key in p:
        if getattr(args, key, None) is not None:
            p[key] = getattr(args, key)
    fit = FitConfig(
        epochs=p["epochs"],
        lr=p["lr"],
        weight_decay=p["weight_decay"],
        schedule=p["schedule"],
        label_smoothing=p["label_smoothing"],
        patience=p["patience"],
        warmup_epochs=p["warmup_epochs"],
        seed=args.seed,
        device=device,
        progress=_progress(args),
    )
    cfg = RecipeConfig(
        arch=args.arch,
        recipe=recipe,
        fit=fit,
        batch_size=p["batch_size"],
        views=args.views,
        train_from_block=args.train_from_block,
        workers=args.workers,
        threads=args.threads,
        refit=args.refit,
    )
    remote = args.output if isinstance(args.output, str) else None
    workdir = args.workdir or Path("runs") / (remote.rsplit("/", 1)[-1] if remote
                                              else args.output.name)
    job = TrainJob(
        data_dir=data_dir,
        output=workdir / "publish" if remote else args.output,
        recipe=cfg,
        split=_split_spec(args),  # checked by _train_args_problem
        workdir=workdir,
        resume=args.resume,
        quantize="int8" if args.serve_quantized else args.quantize,
    )
    published = run(job)
    if remote is not None:
        from corolla.storage.transfer import push_to

        print(f"published {push_to(published, remote)}")
    else:
        print(f"published {published}")
    print(f"report and plots in {published}/: {REPORT_FILES}, training_curves.png")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    _logging()
    from corolla.model_dir import read_metadata
    from corolla.training.data import DatasetError, SplitSpec, scan_dataset, split_dataset
    from corolla.training.evaluate import evaluate_version
    from corolla.training.metrics import format_report

    md = read_metadata(args.version_dir)
    try:
        ds = scan_dataset(args.data_dir, classes=md.labels)
    except DatasetError as exc:
        print(f"corolla evaluate: error: {exc}", file=sys.stderr)
        return 2
    samples = ds.samples
    if args.split != "all":
        rule = md.provenance.get("split") or {}
        if "seed" not in rule:
            print("corolla evaluate: the model records no split; use --split all", file=sys.stderr)
            return 2
        fr = rule["fractions"]
        spec = SplitSpec(
            fractions=(fr["train"], fr["validation"], fr["test"]),
            seed=rule["seed"],
        )
        samples = split_dataset(samples, spec)[args.split]
    out = args.out or args.version_dir / f"eval-{args.split}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"corolla evaluate: error: cannot write the report into {out} ({exc.strerror}); "
              "choose a folder with --output", file=sys.stderr)
        return 2
    metrics = evaluate_version(
        args.version_dir,
        samples,
        out,
        title=f"{args.version_dir} on {args.split} of {args.data_dir}",
        progress=_progress(args),
        root=ds.root,
        variant=args.graph_variant,
    )
    print(format_report(metrics), end="")
    print(f"report and plots in {out}/: {REPORT_FILES}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corolla")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
