"""The leanest Python HTTP image server we could write: a floor for what any Python server reaches.

    python benchmarks/floor_server.py --model-dir DIR --port 8080 --procs 2

Not a product and not a peer: an experiment for the performance issue. It answers every POST
with the top-5 labels of the raw JPEG in the body (as Corolla's raw upload does), using the same
decode + preprocess (``corolla.images.preprocess_image``) and ONNX Runtime session settings as the
in-process limit (one intra-op thread), and it does nothing else: no routing, no limits, no
deadlines, no metrics, no error answers, no threads. Each of ``--procs`` processes binds its own
SO_REUSEPORT socket and runs uvloop with an httptools protocol; a complete request is queued, and
one loop callback at a time decodes up to ``--max-batch`` queued photos, runs them as one batch and
writes the answers, so the batch is whatever arrived while the previous one ran.

What it measures (``benchmarks/ab_corolla.py --variant 'floor=@floor --procs 2'``): the CPU per
request and the throughput that HTTP over loopback plus the model work cost in Python when the
server adds nothing else, next to Corolla in alternating rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np


def serve(model_dir: Path, port: int, max_batch: int) -> None:
    import httptools
    import onnxruntime as ort
    import orjson
    import uvloop

    from corolla.images import preprocess_image
    from corolla.model_dir import read_metadata

    md = read_metadata(model_dir)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_dir / md.graph), sess_options=so,
                                providers=["CPUExecutionProvider"])
    pre = md.preprocessing
    in_name = sess.get_inputs()[0].name
    labels = list(md.labels or [])
    pending: list[tuple[Any, bytes]] = []
    loop = uvloop.new_event_loop()
    scheduled = False

    def run_batch() -> None:
        nonlocal scheduled
        batch = pending[:max_batch]
        del pending[:max_batch]
        x = np.stack([preprocess_image(body, pre) for _, body in batch])
        probs = sess.run(None, {in_name: x})[0]
        for (transport, _), p in zip(batch, probs, strict=True):
            top = np.argsort(p)[::-1][:5]
            out = orjson.dumps({"predictions": [
                {"label": labels[i] if i < len(labels) else str(i), "score": float(p[i])}
                for i in top]})
            if transport.is_closing():  # the client went away
                continue
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                            b"content-length: %d\r\n\r\n%s" % (len(out), out))
        if pending:
            loop.call_soon(run_batch)
        else:
            scheduled = False

    class Conn(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_body(self, chunk: bytes) -> None:
            self.body.append(chunk)

        def on_message_complete(self) -> None:
            nonlocal scheduled
            body = b"".join(self.body)
            self.body = []
            pending.append((self.transport, body))
            if not scheduled:
                scheduled = True
                loop.call_soon(run_batch)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(Conn, sock=sock))
    try:
        loop.run_forever()
    finally:
        server.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True, help="a version directory")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-batch", type=int, default=32)
    args = ap.parse_args()
    children = []
    for _ in range(args.procs):
        pid = os.fork()
        if pid == 0:
            serve(args.model_dir, args.port, args.max_batch)
            os._exit(0)
        children.append(pid)
    try:
        for pid in children:
            os.waitpid(pid, 0)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
