"""``corolla push``, ``corolla fetch-model`` and ``corolla versions``: argument parsing and
exit codes only; the work is in :mod:`corolla.storage.transfer` and the stores.

``fetch-model`` is the storage initializer (a Kubernetes init container, CI): it retries a store
that cannot be reached, verifies every file against the version's manifest, writes each version
under DEST_DIR atomically (a staging name, then a rename), skips versions already there and
intact, and tells failures apart by exit code (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from corolla.errors import Code, CorollaError, DataLoss, InvalidArgument
from corolla.model_dir import METADATA_FILE, read_metadata
from corolla.model_publish import verify_files
from corolla.storage.base import redact

log = logging.getLogger("corolla.storage")
T = TypeVar("T")

EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_CORRUPT = 0, 2, 3, 4, 5
EXIT_CODES = f"""exit status:
  {EXIT_OK}  every requested version is in DEST_DIR, verified
  {EXIT_USAGE}  bad arguments, or a missing extra (the message names it)
  {EXIT_NOT_FOUND}  not found: no such bucket, prefix, key or version (nothing to retry)
  {EXIT_UNREACHABLE}  store unreachable: connection failed, timed out, throttled, or the
     credentials were refused, on every try (--retries)
  {EXIT_CORRUPT}  a version failed verification (sizes or SHA-256 against its manifest)
"""


def exit_code(exc: CorollaError) -> int:
    return {Code.NOT_FOUND: EXIT_NOT_FOUND, Code.UNAVAILABLE: EXIT_UNREACHABLE,
            Code.DATA_LOSS: EXIT_CORRUPT}.get(exc.code, EXIT_USAGE)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    uris = ("a directory, s3://bucket/prefix, gs://bucket/prefix, redis://[user:password@]"
            "host:port[/db]/prefix or rediss://...")
    p = subparsers.add_parser(
        "push", help="publish a version directory to a base path or store",
        description=f"Publish VERSION_DIR under DEST_BASE ({uris}) as the next version "
                    "number (or --version N): every file first, corolla.json with the file "
                    "manifest last, so a server never loads a half-uploaded version.")
    p.add_argument("version_dir", metavar="VERSION_DIR", type=Path)
    p.add_argument("dest", metavar="DEST_BASE")
    p.add_argument("--version", type=int, default=None, help="version number (default: next)")
    p.set_defaults(func=cmd_push)

    f = subparsers.add_parser(
        "fetch-model", help="download verified versions from a store (init containers, CI)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Download versions of the model at SRC ({uris}, or an http(s) "
                    ".tar.gz/.zip archive) into DEST_DIR/<version>/, verified against their "
                    "manifest, atomically. Retries a store it cannot reach.",
        epilog=EXIT_CODES)
    f.add_argument("src", metavar="SRC")
    f.add_argument("dest", metavar="DEST_DIR", type=Path)
    f.add_argument("--version", default="latest",
                   help="latest (default), a version number N, or all")
    f.add_argument("--retries", type=int, default=5,
                   help="tries after the first when the store cannot be reached (backoff "
                        "1, 2, 4... s; default 5)")
    f.set_defaults(func=cmd_fetch)

    v = subparsers.add_parser("versions", help="list or delete the versions in a store",
                              description=f"List or delete versions under a base path ({uris}).")
    vs = v.add_subparsers(dest="versions_command", metavar="ACTION", required=True)
    ls = vs.add_parser("list", help="versions with their files, bytes and manifest state")
    ls.add_argument("base", metavar="BASE")
    ls.set_defaults(func=cmd_list)
    rm = vs.add_parser("delete", help="delete one version (corolla.json first)")
    rm.add_argument("base", metavar="BASE")
    rm.add_argument("version", type=int)
    rm.set_defaults(func=cmd_delete)


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (stderr), nothing elsewhere."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
              file=sys.stderr, leave=False) as bar:
        yield bar.update


def _fail(command: str, exc: CorollaError) -> int:
    print(f"corolla {command}: error: {exc.message}", file=sys.stderr)
    return exit_code(exc)


# ---- push ----------------------------------------------------------------------------------


def cmd_push(args: argparse.Namespace) -> int:
    from corolla.storage import transfer
    from corolla.storage.uri import open_store

    try:
        store = open_store(args.dest)
        try:
            with _progress(transfer.total_bytes(args.version_dir), "push") as progress:
                number = transfer.push(store, args.version_dir, args.version, progress)
        finally:
            store.close()
    except CorollaError as exc:
        return _fail("push", exc)
    print(f"{redact(args.dest).rstrip('/')}/{number}")
    return EXIT_OK


# ---- fetch-model ---------------------------------------------------------------------------


def _retrying(retries: int, fn: Callable[[], T]) -> T:
    """``fn()``, again after a pause while the store is unavailable (its message names the
    store, with any password redacted)."""
    from corolla.storage.base import StoreUnavailable

    for attempt in range(retries + 1):
        try:
            return fn()
        except StoreUnavailable as exc:
            if attempt == retries:
                raise
            delay = min(30.0, 2.0 ** attempt)
            log.warning("%s (try %d of %d; again in %.0f s)", exc.message, attempt + 1,
                        retries + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _intact(version_dir: Path) -> bool:
    """A version already in DEST_DIR that verifies against its manifest."""
    try:
        md = read_metadata(version_dir)
    except CorollaError:
        return False
    if not md.files:
        return False
    try:
        verify_files(version_dir, md.files)
    except DataLoss:
        return False
    return True


def cmd_fetch(args: argparse.Namespace) -> int:
    from corolla.storage import transfer
    from corolla.storage.base import RemoteVersion, StoreNotFound
    from corolla.storage.uri import open_store

    which = args.version
    if which not in ("latest", "all") and not (which.isascii() and which.isdigit()
                                                and int(which) > 0):
        return _fail("fetch-model", InvalidArgument(
            f"--version must be latest, all or a positive number, not {which!r}"))
    try:
        store = open_store(args.src)
    except CorollaError as exc:
        return _fail("fetch-model", exc)
    try:
        listed: dict[int, RemoteVersion] = _retrying(args.retries, store.list_versions)
        if which == "all":
            wanted = sorted(listed)
        elif which == "latest":
            wanted = [max(listed)]
        else:
            if int(which) not in listed:
                raise StoreNotFound(f"{redact(args.src)}: no version {which} "
                                    f"(found: {sorted(listed)})")
            wanted = [int(which)]
        args.dest.mkdir(parents=True, exist_ok=True)
        for v in wanted:
            target = args.dest / str(v)
            if _intact(target):
                print(f"{target} (already there, verified)")
                continue
            plan = _retrying(args.retries, functools.partial(transfer.plan, store, listed[v]))
            if plan.manifest is None:
                log.warning("%s version %d has no file manifest: checked by size only",
                            redact(args.src), v)
            staging = args.dest / f".fetch-{uuid.uuid4().hex}"
            try:
                staging.mkdir()

                def fetch(p: transfer.Plan = plan, d: Path = staging) -> None:
                    for child in list(d.iterdir()):  # a retry starts clean
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                    with _progress(p.size, f"version {p.version.version}") as progress:
                        transfer.download(store, p, d, progress)

                _retrying(args.retries, fetch)
                if target.exists():  # a broken copy from before: replaced whole
                    doomed = args.dest / f".old-{uuid.uuid4().hex}"
                    os.rename(target, doomed)
                    shutil.rmtree(doomed, ignore_errors=True)
                os.rename(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            print(target)
    except CorollaError as exc:
        return _fail("fetch-model", exc)
    finally:
        store.close()
    return EXIT_OK


# ---- versions ------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from corolla.storage import transfer
    from corolla.storage.uri import open_store

    try:
        store = open_store(args.base)
        try:
            listed = store.list_versions()
            print(f"{'version':>8}  {'files':>5}  {'bytes':>12}  state")
            for v in sorted(listed):
                rv = listed[v]
                try:
                    plan = transfer.plan(store, rv)
                    state = ("complete (manifest)" if plan.manifest is not None
                             else "no manifest" if rv.has_metadata else
                             f"no {METADATA_FILE}")
                except CorollaError as exc:
                    state = f"INCOMPLETE: {exc.message}"
                print(f"{v:>8}  {len(rv.files):>5}  {rv.size:>12}  {state}")
        finally:
            store.close()
    except CorollaError as exc:
        return _fail("versions list", exc)
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    from corolla.storage.uri import open_store

    try:
        store = open_store(args.base)
        try:
            store.delete_version(args.version)
        finally:
            store.close()
    except CorollaError as exc:
        return _fail("versions delete", exc)
    print(f"deleted {redact(args.base).rstrip('/')}/{args.version}")
    return EXIT_OK
