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

``--asgi`` serves the same batches through uvicorn (its httptools protocol, no date or server
header, no access log) and a bare ASGI app instead of the hand-written protocol: the floor of an
ASGI server such as Corolla, whose REST API runs on uvicorn (``--variant 'uvfloor=@floor --procs
2 --asgi'``). The difference between the two is what uvicorn and the ASGI cycle cost.
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


def serve(model_dir: Path, port: int, max_batch: int, asgi: bool = False) -> None:
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
            if isinstance(transport, asyncio.Future):  # --asgi: the app answers
                if not transport.done():
                    transport.set_result(out)
                continue
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

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # --asgi: the same batches behind uvicorn's HTTP protocol and the ASGI cycle.
        nonlocal scheduled
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        answer = loop.create_future()
        pending.append((answer, b"".join(chunks)))
        if not scheduled:
            scheduled = True
            loop.call_soon(run_batch)
        out = await answer
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    asyncio.set_event_loop(loop)
    if asgi:
        import uvicorn

        config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None,
                                loop="none", http="httptools", server_header=False,
                                date_header=False)
        loop.run_until_complete(uvicorn.Server(config).serve(sockets=[sock]))
        return
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
    ap.add_argument("--asgi", action="store_true",
                    help="serve through uvicorn (httptools) and an ASGI app instead of a bare "
                         "httptools protocol: what uvicorn and the ASGI cycle cost")
    args = ap.parse_args()
    children = []
    for _ in range(args.procs):
        pid = os.fork()
        if pid == 0:
            serve(args.model_dir, args.port, args.max_batch, args.asgi)
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
