"""Which S3 client library Corolla's stores use: obstore against boto3, measured on moto.

Starts moto's S3 server on a free loopback port, uploads one object of ``--mib`` MiB and
``--objects`` small ones, then times for each client: its import, listing the small objects,
and downloading the big one to a file (best of ``--repeat``). Prints a table in Markdown.
Run: ``.venv/bin/python benchmarks/storage_clients.py`` (needs ``moto[server]``, ``boto3`` and
``obstore``). Loopback numbers say what each client costs in CPU and Python overhead, not what
a real network gives.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                      AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    try:
        import boto3
        import obstore
        from obstore.store import S3Store

        s3 = boto3.client("s3")
        for _ in range(100):
            try:
                s3.create_bucket(Bucket="bench")
                break
            except Exception:
                time.sleep(0.1)
        big = os.urandom(args.mib * 1024 * 1024)
        s3.put_object(Bucket="bench", Key="big/model.onnx", Body=big)
        for i in range(args.objects):
            s3.put_object(Bucket="bench", Key=f"small/{i:05d}", Body=b"x")
        store = S3Store("bench", endpoint=endpoint, allow_http=True)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "out"

            def boto_list() -> int:
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket="bench",
                                                                      Prefix="small/")
                return sum(len(p.get("Contents", [])) for p in pages)

            def obs_list() -> int:
                return sum(len(batch) for batch in obstore.list(store, prefix="small/"))

            def boto_get() -> None:
                s3.download_file("bench", "big/model.onnx", str(target))

            def obs_get() -> None:
                with target.open("wb") as f:
                    for chunk in obstore.get(store, "big/model.onnx").stream(8 << 20):
                        f.write(chunk)

            for name, lister, getter, module in (("boto3", boto_list, boto_get, "boto3"),
                                                 ("obstore", obs_list, obs_get, "obstore")):
                assert lister() == args.objects
                list_s, get_s, cpu_s = [], [], []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    lister()
                    list_s.append(time.perf_counter() - t)
                    t, c = time.perf_counter(), time.process_time()
                    getter()
                    get_s.append(time.perf_counter() - t)
                    cpu_s.append(time.process_time() - c)
                    assert target.stat().st_size == len(big)
                i = get_s.index(min(get_s))
                rows.append((name, import_seconds(module), min(list_s), get_s[i], cpu_s[i]))
        print(f"| client | import s | list {args.objects} objects s | get {args.mib} MiB s "
              "| MiB/s | CPU s of the get |")
        print("|---|---|---|---|---|---|")
        for name, imp, lst, get, cpu in rows:
            print(f"| {name} | {imp:.2f} | {lst:.3f} | {get:.3f} | {args.mib / get:.0f} "
                  f"| {cpu:.2f} |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
