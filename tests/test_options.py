"""Settings that depend on the machine, decided in one place (ServerOptions.resolved): a table."""

from __future__ import annotations

import pytest

from corolla.batching import BatchingOptions
from corolla.options import ServerOptions
from corolla.runtimes.onnx import OnnxOptions

AUTO = BatchingOptions(autotune=True)  # Corolla's default batching (the CLI's)
FILE = BatchingOptions(num_batch_threads=3)  # a --batching_parameters_file
CHOOSE = OnnxOptions(intra_op_threads=None, solo_threads=None)  # the CLI's defaults


@pytest.mark.parametrize(
    ("cpus", "machine", "workers", "batching", "onnx", "inline", "want"),
    [
        # want: (inline, intra, solo, batch threads, decode, infer, load threads)
        (2, 2, 1, AUTO, CHOOSE, None, (False, 1, 2, 2, 2, 2, 2)),
        (2, 2, 2, AUTO, CHOOSE, None, (True, 1, 1, 1, 1, 1, 2)),  # one core per process
        (1, 64, 1, AUTO, CHOOSE, None, (True, 1, 1, 1, 1, 1, 2)),  # a one-CPU container
        (1, 1, 1, AUTO, CHOOSE, None, (True, 0, 1, 1, 1, 1, 2)),  # the machine: ORT's own
        (8, 8, 2, AUTO, CHOOSE, False, (False, 1, 4, 4, 4, 4, 4)),
        (4, 4, 4, None, CHOOSE, None, (True, 1, 1, None, 1, 1, 2)),  # batching off
        (4, 4, 1, None, CHOOSE, None, (False, 1, 4, None, 4, 4, 4)),
        (16, 16, 1, FILE, CHOOSE, True, (True, 1, 16, 3, 16, 3, 16)),  # the file's threads
        # Set explicitly: kept.
        (2, 2, 1, AUTO, OnnxOptions(intra_op_threads=2, solo_threads=1), None,
         (False, 2, 1, 2, 2, 2, 2)),
        # Built directly (tests, embedding): ONNX Runtime's defaults and no inline requests.
        (2, 2, 1, BatchingOptions(), OnnxOptions(), False, (False, 0, 0, 2, 2, 2, 2)),
    ],
)
def test_resolved(cpus: int, machine: int, workers: int, batching: BatchingOptions | None,
                  onnx: OnnxOptions, inline: bool | None,
                  want: tuple[bool, int, int, int | None, int, int, int]) -> None:
    options = ServerOptions(rest_workers=workers, batching=batching, onnx=onnx,
                            inline_requests=inline)
    got = options.resolved(cpus, machine)
    threads = got.batching.num_batch_threads if got.batching is not None else None
    assert (got.inline_requests, got.onnx.intra_op_threads, got.onnx.solo_threads, threads,
            got.decode_threads, got.infer_threads, got.load_threads) == want
    assert got.resolved(cpus, machine) == got  # resolving twice changes nothing
