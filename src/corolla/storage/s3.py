"""``s3://bucket/prefix``: AWS S3 and S3-compatible stores (MinIO, Ceph), with boto3.

Endpoint, region and credentials come from the standard AWS configuration that boto3 reads:
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_REGION``, access keys, ``AWS_PROFILE``
and shared config files, web-identity tokens (EKS IRSA), container and instance roles.
Transfers use boto3's managed transfers (multipart, parallel ranges). One client per store,
shared by threads (boto3 clients are thread-safe).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corolla.errors import CorollaError
from corolla.storage.base import Progress, StoreNotFound, StoreUnavailable, missing_extra
from corolla.storage.objects import ObjectStore

_NOT_FOUND = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}


class S3Store(ObjectStore):
    scheme = "s3"

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise missing_extra("s3", "s3", exc) from exc
        self._client: Any = boto3.session.Session().client("s3", config=Config(
            connect_timeout=5, read_timeout=30,
            retries={"mode": "standard", "max_attempts": 3}))

    def _error(self, exc: Exception, what: str) -> CorollaError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            message = exc.response.get("Error", {}).get("Message", "") or code
            if code in _NOT_FOUND:
                return StoreNotFound(f"{self.name}: {what}: not found ({code})")
            return StoreUnavailable(f"{self.name}: {what}: {code}: {message}")
        return StoreUnavailable(f"{self.name}: {what}: {exc}")

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, what) from exc

    def _list(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        it = iter(pages)
        while True:
            page = self._call("listing", next, it, None)
            if page is None:
                return
            for obj in page.get("Contents", ()):
                yield obj["Key"], int(obj["Size"]), str(obj.get("ETag", "")).strip('"')

    def _get_file(self, key: str, dest: Path, progress: Progress | None) -> None:
        self._call(f"get {key}", self._client.download_file, self.bucket, key, str(dest),
                   Callback=progress)

    def _get_bytes(self, key: str) -> bytes:
        resp = self._call(f"get {key}", self._client.get_object, Bucket=self.bucket, Key=key)
        return bytes(self._call(f"get {key}", resp["Body"].read))

    def _put_file(self, key: str, path: Path, progress: Progress | None) -> None:
        self._call(f"put {key}", self._client.upload_file, str(path), self.bucket, key,
                   Callback=progress)

    def _put_bytes(self, key: str, data: bytes) -> None:
        self._call(f"put {key}", self._client.put_object, Bucket=self.bucket, Key=key,
                   Body=data)

    def _delete(self, keys: list[str]) -> None:
        resp = self._call("delete", self._client.delete_objects, Bucket=self.bucket,
                          Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        errors = resp.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreUnavailable(f"{self.name}: delete {first.get('Key')}: "
                                   f"{first.get('Code')}: {first.get('Message')}")

    def close(self) -> None:
        self._client.close()
