"""Data safety with an S3 origin (issue 6) on moto and SeaweedFS: a bucket
that answers 403 or 404 is an error before anything is written, and many
versions of one key within one second of LastModified (S3's resolution)
keep the order in which they were written."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replicator.config import (
    FsDestinationSettings,
    S3OriginSettings,
    S3SourceSettings,
    Settings,
    StoreSettings,
)
from replicator.errors import SourceUnavailableError
from replicator.origins.s3 import S3Origin
from replicator.pipeline.backfill import Backfill, run_backfill
from replicator.restore import Selection, restore
from replicator.store.backend import Backend
from replicator.store.peer import close_peers, open_peers
from replicator.store.reader import (
    VersionEntry,
    choose_version,
    fetch_run,
    list_versions,
    read_manifest,
    verified_chunks,
)
from tests.integration.test_backfill import CHUNKING, MIB
from tests.services.s3client import S3Endpoint, empty_and_delete_bucket

SERVERS = ["moto", "seaweedfs"]


@pytest.fixture(params=SERVERS)
def endpoint(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    fixture = "moto_server" if request.param == "moto" else "seaweed_server"
    ep: S3Endpoint = request.getfixturevalue(fixture).endpoint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ep.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ep.secret_access_key)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return ep


@pytest.fixture
def bucket(endpoint: S3Endpoint) -> Iterator[str]:
    admin = endpoint.client()
    name = f"src-safe-{os.urandom(4).hex()}"
    admin.create_bucket(Bucket=name)
    admin.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    yield name
    for page in admin.get_paginator("list_object_versions").paginate(Bucket=name):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            admin.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
    empty_and_delete_bucket(admin, name)


def _settings(ep: S3Endpoint, bucket: str, tmp: Path) -> Settings:
    return Settings(
        source=S3SourceSettings(type="s3", bucket=bucket),
        origin=S3OriginSettings(endpoint_url=ep.url, region=ep.region, addressing_style="path"),
        destinations=[FsDestinationSettings(name="peer", path=tmp / "peer")],
        chunking=CHUNKING,
        store=StoreSettings(pack_size=MIB, cache_dir=tmp / "cache"),
    )


async def test_a_missing_or_forbidden_bucket_exits_2_before_writing(
    endpoint: S3Endpoint, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = _settings(endpoint, bucket + "-typo", tmp_path)
    with pytest.raises(SourceUnavailableError, match=r"-typo' does not exist \(404\)") as exc:
        await run_backfill(missing)
    assert exc.value.exit_code == 2
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(SourceUnavailableError, match="access denied") as exc:
        await run_backfill(_settings(endpoint, bucket, tmp_path))
    assert not (tmp_path / "peer").exists(), "no store was created"
    print(f"{endpoint.server}: {exc.value}")


def _put_and_stamp(admin: Any, bucket: str, key: str, body: bytes) -> int:
    admin.put_object(Bucket=bucket, Key=key, Body=body)
    head = admin.head_object(Bucket=bucket, Key=key)
    return int(head["LastModified"].timestamp() * 10**6)


async def test_many_versions_in_one_second_keep_their_order(
    endpoint: S3Endpoint, bucket: str, tmp_path: Path
) -> None:
    admin = endpoint.client()
    settings = _settings(endpoint, bucket, tmp_path)
    origin = S3Origin(bucket, "", settings.origin)  # type: ignore[arg-type]
    peers = await open_peers(settings, create=True)
    bodies = [b"version %d " % n * (n + 1) for n in range(5)]
    stamps = []
    try:
        for body in bodies:
            stamps.append(await asyncio.to_thread(_put_and_stamp, admin, bucket, "ckpt", body))
            job = Backfill(origin, peers, CHUNKING.params(), settings.store)
            summary = await job.run()
            assert (summary.replicated, summary.errors) == (1, 0), summary.error_samples
    finally:
        await close_peers(peers)
        await origin.close()
    same_second = sum(a // 10**6 == b // 10**6 for a, b in itertools.pairwise(stamps))
    assert same_second >= 1, f"no two versions shared a second: {stamps}"
    # Read back as restore does: through the reopened peer (its own format).
    [peer] = await open_peers(settings, create=False)
    backend = peer.backend
    try:
        [(_, versions)] = [kv async for kv in list_versions(backend, bucket)]
        got = [await _bytes_of(backend, v) for v in versions]
        assert got == bodies, "listing order is the order the versions were written"
        last = max(stamps) * 1000  # --at the last version's second: the newest
        assert await _restored(backend, bucket, tmp_path / "at-last", last) == bodies[-1]
    finally:
        await close_peers([peer])
    first = min(stamps) * 1000 - 1  # just before the first version: nothing
    assert choose_version(versions, first) is None
    print(
        f"{endpoint.server}: {len(bodies)} versions, LastModified (us) {stamps}, "
        f"{same_second} consecutive pairs in one second, all in order"
    )


async def _bytes_of(backend: Backend, entry: VersionEntry) -> bytes:
    """One stored version's bytes, read through the store reader."""
    m = await read_manifest(backend, entry)
    parts: list[bytes] = []
    for run in m.runs:
        parts += verified_chunks(run, await fetch_run(backend, run))
    return b"".join(parts)


async def _restored(backend: Backend, bucket: str, out: Path, at: int) -> bytes:
    """What ``restore --key ckpt --at`` writes."""
    summary = await restore(backend, Selection(bucket, "ckpt", True, at), out)
    assert summary.ok, summary.errors
    return (out / "ckpt").read_bytes()
