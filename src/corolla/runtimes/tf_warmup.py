"""Model warmup: replay ``assets.extra/tf_serving_warmup_requests`` before a version serves.

The file is TF Serving's: a TFRecord file of ``tensorflow.serving.PredictionLog`` records (at
most 1000), each replayed ``iterations`` times against the servable being loaded. Any failure
fails the load, as in TF Serving, so a version whose warmup does not run never turns AVAILABLE.
Supported records: ``predict_log``, ``classify_log``, ``regress_log``, ``multi_inference_log``
(``session_run_log`` is TF1's SessionService, which Corolla does not serve).

Nothing here imports a framework: records are read with a small TFRecord reader (framing and the
length checksum are verified; a payload that is not a PredictionLog fails to parse) and replayed
through ``servable.predict``, so any runtime can use it. Runs on the loading worker thread.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corolla.errors import CorollaError, FailedPrecondition, InvalidArgument
from corolla.protocols import tf_inference

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses it. Pure Python: for short data only."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(path: Path) -> Iterator[bytes]:
    """The records of an uncompressed TFRecord file.

    Each record is ``uint64 length, uint32 masked_crc32c(length), data, uint32
    masked_crc32c(data)``, little-endian. The length's checksum is verified (a file that is not
    TFRecord fails at once); the payload's is not (pure-Python CRC of megabytes of images would
    slow every load), so a damaged payload shows up as a record that does not parse.
    """
    with open(path, "rb") as f:
        index = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise FailedPrecondition(f"{path}: record {index} is truncated. Please verify "
                                         "your warmup data is in TFRecord format.")
            length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
            if masked_crc32c(length_bytes) != length_crc:
                raise FailedPrecondition(f"{path}: record {index} is corrupted. Please verify "
                                         "your warmup data is in TFRecord format.")
            (length,) = struct.unpack("<Q", length_bytes)
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise FailedPrecondition(f"{path}: record {index} is truncated. Please verify "
                                         "your warmup data is in TFRecord format.")
            yield data
            index += 1


def write_tfrecords(path: Path, records: list[bytes]) -> None:
    """Write records as TFRecord (for tests and tools; TensorFlow's writer does the same)."""
    with open(path, "wb") as f:
        for rec in records:
            length = struct.pack("<Q", len(rec))
            f.write(length)
            f.write(struct.pack("<I", masked_crc32c(length)))
            f.write(rec)
            f.write(struct.pack("<I", masked_crc32c(rec)))


def run_warmup(servable: Any, version_dir: Path, *, iterations: int = 1) -> int:
    """Replay the version's warmup records, if it has any; returns how many were replayed."""
    path = version_dir / WARMUP_FILE
    if not path.is_file():
        return 0
    from corolla.protos.gen.tensorflow_serving.apis import prediction_log_pb2

    start = time.perf_counter()
    count = 0
    for data in read_tfrecords(path):
        if count >= MAX_RECORDS:
            raise FailedPrecondition(
                f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
        entry = prediction_log_pb2.PredictionLog()
        try:
            entry.ParseFromString(data)
        except Exception as exc:  # google.protobuf.message.DecodeError
            raise FailedPrecondition(
                f"Failed to parse warmup record {count} from {path}") from exc
        for _ in range(max(1, iterations)):
            try:
                replay(servable, entry)
            except CorollaError as exc:
                raise FailedPrecondition(
                    f"warmup record {count} of {path} failed: {exc.message}") from exc
        count += 1
    log.info("%s: warmup replayed %d records in %.3fs", version_dir, count,
             time.perf_counter() - start)
    return count


def replay(servable: Any, entry: Any) -> None:
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        _predict(servable, entry.predict_log.request)
    elif kind == "predict_streamed_log":
        for request in entry.predict_streamed_log.request:
            _predict(servable, request)
    elif kind == "classify_log":
        req = entry.classify_log.request
        _examples(servable, req.model_spec.signature_name, tf_inference.CLASSIFY_METHOD,
                  req.input)
    elif kind == "regress_log":
        req = entry.regress_log.request
        _examples(servable, req.model_spec.signature_name, tf_inference.REGRESS_METHOD,
                  req.input)
    elif kind == "multi_inference_log":
        req = entry.multi_inference_log.request
        for task in req.tasks:
            if task.method_name not in (tf_inference.CLASSIFY_METHOD,
                                        tf_inference.REGRESS_METHOD):
                raise InvalidArgument(f"Unsupported signature method_name: {task.method_name}")
            _examples(servable, task.model_spec.signature_name, task.method_name, req.input)
    else:
        raise InvalidArgument("Unsupported log_type for warmup (session_run_log or none)")


def _predict(servable: Any, request: Any) -> None:
    from corolla.protocols.tensor_proto import to_numpy

    name = request.model_spec.signature_name or "serving_default"
    sig = servable.metadata.signatures.get(name)
    if sig is None:
        raise InvalidArgument(f"Serving signature name: \"{name}\" not found in signature def")
    inputs = {alias: to_numpy(tp) for alias, tp in request.inputs.items()}
    if set(inputs) != set(sig.inputs):
        raise InvalidArgument(
            f"inputs {sorted(inputs)} do not match signature {name!r} inputs {sorted(sig.inputs)}")
    unknown = [a for a in request.output_filter if a not in sig.outputs]
    if unknown:
        raise InvalidArgument(f"output tensor alias not found in signature: {unknown[0]}")
    servable.predict(inputs, signature=name, output_filter=tuple(request.output_filter))


def _examples(servable: Any, signature_name: str, method_name: str, input_msg: Any) -> None:
    esig = tf_inference.example_signature(servable.metadata.signatures, signature_name,
                                          method_name)
    serialized = tf_inference.serialize_input(input_msg)
    outputs = servable.predict({esig.input: serialized}, signature=esig.name,
                               output_filter=esig.outputs)
    if esig.is_classify:
        tf_inference.classifications(esig, outputs, len(serialized))
    else:
        tf_inference.regressions(esig, outputs, len(serialized))
