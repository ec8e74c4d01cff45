"""``gs://bucket/prefix``: Google Cloud Storage, with google-cloud-storage.

Credentials are Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's
user credentials, workload identity, the metadata server); ``STORAGE_EMULATOR_HOST`` points the
client at an emulator (anonymous credentials then, as the client library does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corolla.errors import CorollaError
from corolla.storage.base import Progress, StoreNotFound, StoreUnavailable, missing_extra
from corolla.storage.objects import ObjectStore

TIMEOUT = (5, 60)  # connect, read seconds
CHUNK = 8 << 20
# How long one call retries (the client's default is 120 s of backoff, so a store that refuses
# connections held each listing for two minutes, and `fetch-model --retries 5` for twelve).
# Corolla retries on its own above this: the source backs off, fetch-model has --retries.
RETRY_SECONDS = 10.0


class GcsStore(ObjectStore):
    scheme = "gs"

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        try:
            from google.cloud import storage
        except ImportError as exc:
            raise missing_extra("gs", "gcs", exc) from exc
        try:
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(credentials=AnonymousCredentials(),
                                        project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test"))
            else:
                client = storage.Client()
        except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and kin
            raise StoreUnavailable(f"{self.name}: no Google Cloud credentials: {exc}") from exc
        from google.cloud.storage.retry import DEFAULT_RETRY

        self._client: Any = client
        self._bucket: Any = client.bucket(self.bucket)
        self._retry: Any = DEFAULT_RETRY.with_timeout(RETRY_SECONDS)

    def _error(self, exc: Exception, what: str) -> CorollaError:
        from google.api_core import exceptions as gexc

        if isinstance(exc, gexc.NotFound):
            return StoreNotFound(f"{self.name}: {what}: not found")
        return StoreUnavailable(f"{self.name}: {what}: {exc}")

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CorollaError:
            raise
        except Exception as exc:  # google.api_core / google.auth / requests exceptions
            raise self._error(exc, what) from exc

    def _list(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        blobs = self._call("listing", self._client.list_blobs, self._bucket, prefix=prefix,
                           timeout=TIMEOUT, retry=self._retry)
        it = iter(blobs)
        while True:
            blob = self._call("listing", next, it, None)
            if blob is None:
                return
            yield blob.name, int(blob.size or 0), str(blob.generation or blob.etag or "")

    def _get_file(self, key: str, dest: Path, progress: Progress | None) -> None:
        blob = self._bucket.blob(key, chunk_size=CHUNK)
        self._call(f"get {key}", blob.download_to_filename, str(dest), timeout=TIMEOUT,
                   retry=self._retry)
        if progress is not None:
            progress(dest.stat().st_size)

    def _get_bytes(self, key: str) -> bytes:
        return bytes(self._call(f"get {key}", self._bucket.blob(key).download_as_bytes,
                                timeout=TIMEOUT, retry=self._retry))

    def _put_file(self, key: str, path: Path, progress: Progress | None) -> None:
        self._call(f"put {key}", self._bucket.blob(key).upload_from_filename, str(path),
                   timeout=TIMEOUT)
        if progress is not None:
            progress(path.stat().st_size)

    def _put_bytes(self, key: str, data: bytes) -> None:
        self._call(f"put {key}", self._bucket.blob(key).upload_from_string, data,
                   timeout=TIMEOUT)

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            self._call(f"delete {key}", self._bucket.blob(key).delete, timeout=TIMEOUT,
                       retry=self._retry)

    def close(self) -> None:
        self._client.close()
