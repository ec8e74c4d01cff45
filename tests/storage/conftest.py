"""Store fixtures: moto S3, the GCS emulator and redis-server, started once per session on free
loopback ports; each test gets its own bucket or key prefix (``store_uri``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from storage_servers import gcs_emulator, moto_s3, needs, redis_server


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    needs("redis-server")
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield port


def s3_environment(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


def make_bucket_s3(endpoint: str) -> str:
    import boto3

    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test"
                 ).create_bucket(Bucket=bucket)
    return bucket


def make_bucket_gcs(endpoint: str) -> str:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    storage.Client(credentials=AnonymousCredentials(), project="test").create_bucket(bucket)
    return bucket


StoreFactory = Callable[[str], str]


@pytest.fixture
def store_uri(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """``store_uri(kind)``: a fresh, empty base path URI in a store of that kind."""

    def make(kind: str) -> str:
        if kind == "local":
            return str(tmp_path / f"local-{uuid.uuid4().hex[:8]}" / "m")
        if kind == "s3":
            endpoint = request.getfixturevalue("s3_endpoint")
            for k, v in s3_environment(endpoint).items():
                monkeypatch.setenv(k, v)
            return f"s3://{make_bucket_s3(endpoint)}/models/m"
        if kind == "gs":
            endpoint = request.getfixturevalue("gcs_endpoint")
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
            return f"gs://{make_bucket_gcs(endpoint)}/models/m"
        if kind == "redis":
            port = request.getfixturevalue("redis_port")
            return f"redis://127.0.0.1:{port}/0/t-{uuid.uuid4().hex[:12]}/m"
        raise AssertionError(kind)

    return make
