"""Fixtures of the integration tier: real servers, fresh buckets, every backend.

Servers are session-scoped (moto starts in ~2 s, SeaweedFS in ~10 s); each
test gets its own bucket (or directory), removed afterwards. A server whose
binary is genuinely missing skips its cases with the reason, unless
``REPLICATOR_REQUIRE_SERVICES=1`` (CI), where a missing server is a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from replicator.store.backend import Backend
from replicator.store.backends import FsBackend, S3Backend, S3Credentials
from tests.services.moto_server import MotoServer
from tests.services.process import ServiceError
from tests.services.s3client import S3Endpoint, empty_and_delete_bucket
from tests.services.seaweedfs.server import SeaweedServer

#: Listing page size of every backend under test: small, so that a few dozen
#: keys already span several pages (S3's MaxKeys, the fs walker's batch).
PAGE_SIZE = 7
BACKENDS = ["fs", "moto", "seaweedfs"]


def _unavailable(reason: str) -> None:
    if os.environ.get("REPLICATOR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required test service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    try:
        server = MotoServer(tmp_path_factory.mktemp("moto"))
    except ServiceError as exc:
        _unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    try:
        server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    except ServiceError as exc:
        _unavailable(str(exc))
    yield server
    server.stop()


@dataclass
class StoreUnderTest:
    """A backend plus what a test needs to look behind it."""

    kind: str  # "fs", "moto" or "seaweedfs"
    backend: Backend
    root: Path | None = None  # fs only
    endpoint: S3Endpoint | None = None  # S3 servers only
    bucket: str = ""
    admin: Any = None  # a plain botocore client on the bucket's server

    def s3(self) -> S3Backend:
        assert isinstance(self.backend, S3Backend)
        return self.backend


def make_s3_backend(endpoint: S3Endpoint, bucket: str, *, secret: str | None = None) -> S3Backend:
    return S3Backend(
        f"{endpoint.server}-test",
        bucket,
        endpoint_url=endpoint.url,
        region=endpoint.region,
        addressing_style="path",
        credentials=S3Credentials(endpoint.access_key_id, secret or endpoint.secret_access_key),
        page_size=PAGE_SIZE,
    )


@pytest.fixture(params=BACKENDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def s3_endpoint(request: pytest.FixtureRequest, store_kind: str) -> S3Endpoint | None:
    if store_kind == "moto":
        server: MotoServer | SeaweedServer = request.getfixturevalue("moto_server")
    elif store_kind == "seaweedfs":
        server = request.getfixturevalue("seaweed_server")
    else:
        return None
    return server.endpoint


@pytest.fixture
async def store(
    store_kind: str, s3_endpoint: S3Endpoint | None, tmp_path: Path
) -> AsyncIterator[StoreUnderTest]:
    if s3_endpoint is None:
        root = tmp_path / "peer"
        backend = FsBackend(root, "fs-test", page_size=PAGE_SIZE)
        yield StoreUnderTest(store_kind, backend, root=root)
        await backend.close()
        return
    bucket = f"rt-{secrets.token_hex(6)}"
    admin = s3_endpoint.client()
    admin.create_bucket(Bucket=bucket)
    s3 = make_s3_backend(s3_endpoint, bucket)
    try:
        yield StoreUnderTest(store_kind, s3, endpoint=s3_endpoint, bucket=bucket, admin=admin)
    finally:
        await s3.close()
        empty_and_delete_bucket(admin, bucket)


@pytest.fixture
def backend(store: StoreUnderTest) -> Backend:
    return store.backend
