"""Backfill against S3: peers on every backend (fs, moto, SeaweedFS), and an
S3 origin on moto (versioned and unversioned buckets, pinned reads)."""

from __future__ import annotations

import os
import time
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
from replicator.errors import SourceUnavailableError, SupersededError
from replicator.origins import ObjectVersion
from replicator.origins.fs import FsOrigin
from replicator.origins.s3 import S3Origin
from replicator.pipeline.backfill import Backfill, run_backfill
from replicator.pipeline.windows import Chunked, chunk_windows
from replicator.store.backends import FsBackend
from replicator.store.format import StoreConfig
from replicator.store.peer import peer_on
from tests.integration.conftest import StoreUnderTest
from tests.integration.test_backfill import (
    CHUNKING,
    MIB,
    PutCounter,
    check_structure,
    fs_probe_requests,
    manifests_at,
    write_tree,
)
from tests.services.moto_server import MotoServer
from tests.services.s3client import S3Endpoint, empty_and_delete_bucket
from tests.services.seaweedfs.server import SeaweedServer


async def _backfill_into(store: StoreUnderTest, src: Path, cache: Path) -> tuple[int, PutCounter]:
    counter = PutCounter(store.backend)
    cfg = StoreConfig(CHUNKING.params())
    peer = await peer_on("peer", counter, cfg, f"test:{store.kind}:{store.bucket}", create=True)
    settings_store = StoreSettings(pack_size=MIB, cache_dir=cache)
    job = Backfill(FsOrigin(src), [peer], CHUNKING.params(), settings_store)
    summary = await job.run()
    assert summary.errors == 0, summary.error_samples
    return summary.shipped_bytes["peer"], counter


async def test_backfill_to_each_backend_then_replay_and_edit(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    big = bytearray(os.urandom(3 * MIB))
    files = {"a/big.bin": bytes(big), "a/copy.bin": bytes(big), "b/small": b"x" * 100}
    write_tree(tmp_path / "src", files)
    shipped, counter = await _backfill_into(store, tmp_path / "src", tmp_path / "cache")
    assert shipped == 3 * MIB + 100
    assert await check_structure(store.backend) == files
    first = dict(counter.puts)

    again, counter = await _backfill_into(store, tmp_path / "src", tmp_path / "cache")
    assert again == 0 and sum(counter.puts.values()) == 0
    probe = counter.probe_requests
    assert probe > 0  # the start-up probe ran; its requests are counted apart

    big[MIB : MIB + 10] = b"0123456789"
    write_tree(tmp_path / "src", {"a/big.bin": bytes(big)})
    edited, counter = await _backfill_into(store, tmp_path / "src", tmp_path / "cache")
    assert 0 < edited <= 2 * CHUNKING.max_size
    assert dict(counter.puts) == {"packs": 1, "index": 1, "manifests": 1}
    assert (await check_structure(store.backend))["a/big.bin"] == bytes(big)
    print(
        f"{store.kind}: first run PUTs {first}, replay 0 PUTs besides the start-up probe's "
        f"{probe} requests (its own test objects), 10-byte edit shipped {edited}"
    )


# ------------------------------------------------------------ S3 origin


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """moto with its credentials in the standard AWS chain (env vars)."""
    ep = moto_server.endpoint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ep.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ep.secret_access_key)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return ep


def _bucket(moto: S3Endpoint, name: str, *, versioned: bool) -> Iterator[str]:
    admin = moto.client()
    admin.create_bucket(Bucket=name)
    if versioned:
        admin.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    yield name
    for page in admin.get_paginator("list_object_versions").paginate(Bucket=name):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            admin.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
    empty_and_delete_bucket(admin, name)


@pytest.fixture
def versioned(moto: S3Endpoint) -> Iterator[str]:
    yield from _bucket(moto, f"src-v-{os.urandom(4).hex()}", versioned=True)


@pytest.fixture
def unversioned(moto: S3Endpoint) -> Iterator[str]:
    yield from _bucket(moto, f"src-u-{os.urandom(4).hex()}", versioned=False)


def _origin_cfg(moto: S3Endpoint) -> S3OriginSettings:
    return S3OriginSettings(
        endpoint_url=moto.url, region=moto.region, addressing_style="path", read_size=MIB
    )


def _settings(moto: S3Endpoint, bucket: str, tmp: Path) -> Settings:
    return Settings(
        source=S3SourceSettings(type="s3", bucket=bucket),
        origin=_origin_cfg(moto),
        destinations=[FsDestinationSettings(name="peer", path=tmp / "peer")],
        chunking=CHUNKING,
        store=StoreSettings(pack_size=MIB, cache_dir=tmp / "cache", max_delete_fraction=1.0),
    )


async def _read(origin: S3Origin, obj: ObjectVersion) -> bytes:
    reader = await origin.open(obj)
    parts: list[bytes] = []
    async for batch in chunk_windows(reader, CHUNKING.params(), MIB, Chunked()):
        parts += [bytes(batch.data(i)) for i in range(len(batch))]
    return b"".join(parts)


def _overwrite_later(admin: Any, bucket: str, key: str, body: bytes) -> None:
    """Overwrite until the new version's LastModified differs from the old.

    S3 times have one-second resolution: two versions written within one
    second carry the same event time and their order in the store is
    undefined (a format limitation, reported), so the test makes them differ."""
    before = admin.head_object(Bucket=bucket, Key=key)["LastModified"]
    while True:
        admin.put_object(Bucket=bucket, Key=key, Body=body)
        if admin.head_object(Bucket=bucket, Key=key)["LastModified"] > before:
            return
        time.sleep(0.1)


async def test_s3_origin_backfill_versions_and_removals(
    moto: S3Endpoint, versioned: str, tmp_path: Path
) -> None:
    admin = moto.client()
    objects = {"ckpt/model.bin": os.urandom(2 * MIB + 12345), "ckpt/cfg.json": b"{}", "e": b""}
    for key, data in objects.items():
        admin.put_object(Bucket=versioned, Key=key, Body=data)
    settings = _settings(moto, versioned, tmp_path)
    summary = await run_backfill(settings)
    assert (summary.replicated, summary.errors) == (3, 0)
    backend = FsBackend(tmp_path / "peer", "peer")
    assert await check_structure(backend) == objects
    ident = (await manifests_at(backend))["ckpt/model.bin"][0].identity
    assert ident.version_id and ident.etag.startswith('"') and ident.source == "s3"

    replay = await run_backfill(settings)
    assert replay.unchanged == 3 and replay.put_requests == {"peer": 0}

    _overwrite_later(admin, versioned, "ckpt/cfg.json", b'{"lr": 1}')
    admin.delete_object(Bucket=versioned, Key="e")  # a delete marker
    third = await run_backfill(settings)
    assert (third.replicated, third.unchanged, third.removed) == (1, 1, 1)
    versions = await manifests_at(backend)
    assert [m.removed for m in versions["e"]] == [False, True]
    assert len(versions["ckpt/cfg.json"]) == 2  # backfill replicates current versions only
    live = await check_structure(backend)
    assert live == {"ckpt/model.bin": objects["ckpt/model.bin"], "ckpt/cfg.json": b'{"lr": 1}'}
    print(
        f"s3 origin: 3 objects ({sum(map(len, objects.values()))} bytes) in windows of 1 MiB, "
        f"replay 0 PUTs (put_requests excludes the fs peer's start-up probe, "
        f"{await fs_probe_requests(tmp_path / 'probe')} requests), "
        f"then 1 overwrite + 1 delete marker -> {third.put_requests} PUTs"
    )


async def test_s3_reads_are_pinned_to_the_listed_version(moto: S3Endpoint, versioned: str) -> None:
    admin = moto.client()
    old = os.urandom(MIB + 999)
    admin.put_object(Bucket=versioned, Key="k", Body=old)
    origin = S3Origin(versioned, "", _origin_cfg(moto))
    try:
        [listed] = [o async for o in origin.list()]
        admin.put_object(Bucket=versioned, Key="k", Body=b"newer")
        assert await _read(origin, listed) == old, "the listed version, not the newest"
        admin.delete_object(Bucket=versioned, Key="k", VersionId=listed.version_id)
        with pytest.raises(SupersededError):
            await _read(origin, listed)
    finally:
        await origin.close()


async def test_s3_overwrite_of_unversioned_object_is_superseded(
    moto: S3Endpoint, unversioned: str
) -> None:
    admin = moto.client()
    admin.put_object(Bucket=unversioned, Key="k", Body=os.urandom(3 * MIB))
    origin = S3Origin(unversioned, "", _origin_cfg(moto))
    try:
        [listed] = [o async for o in origin.list()]
        assert listed.version_id == "" and listed.etag
        reader = await origin.open(listed)
        windows = chunk_windows(reader, CHUNKING.params(), MIB, Chunked())
        await anext(windows)  # the first ranged GET succeeded
        admin.put_object(Bucket=unversioned, Key="k", Body=os.urandom(3 * MIB))
        with pytest.raises(SupersededError):
            async for _ in windows:
                pass
        admin.delete_object(Bucket=unversioned, Key="k")
        with pytest.raises(SupersededError):
            await _read(origin, listed)
    finally:
        await origin.close()


async def test_access_denied_listing_is_an_error_never_a_removal(
    moto: S3Endpoint, versioned: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = moto.client()
    admin.put_object(Bucket=versioned, Key="keep", Body=b"data")
    settings = _settings(moto, versioned, tmp_path)
    assert (await run_backfill(settings)).replicated == 1
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    # The bucket check before any write refuses it (exit 2).
    with pytest.raises(SourceUnavailableError, match="access denied"):
        await run_backfill(settings)
    versions = await manifests_at(FsBackend(tmp_path / "peer", "peer"))
    assert [m.removed for m in versions["keep"]] == [False], "403 is never a delete"


async def test_seaweedfs_origin_multipart_object_on_unversioned_bucket(
    seaweed_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A real server's multipart object, read with reads pinned to its ETag.

    SeaweedFS 4.53 reports another ETag for a multipart object in
    ListObjectVersions than GET and ListObjectsV2 do; pinning to the former
    made every read answer 412 (superseded), so nothing was replicated."""
    ep = seaweed_server.endpoint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ep.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ep.secret_access_key)
    admin = ep.client()
    bucket = f"src-mp-{os.urandom(4).hex()}"
    admin.create_bucket(Bucket=bucket)
    parts = [os.urandom(5 * MIB), os.urandom(MIB + 7)]
    up = admin.create_multipart_upload(Bucket=bucket, Key="ckpt/model.safetensors")
    etags = [
        admin.upload_part(Bucket=bucket, Key="ckpt/model.safetensors", PartNumber=n,
                          UploadId=up["UploadId"], Body=body)["ETag"]
        for n, body in enumerate(parts, 1)
    ]  # fmt: skip
    admin.complete_multipart_upload(
        Bucket=bucket,
        Key="ckpt/model.safetensors",
        UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    try:
        settings = _settings(seaweed_server.endpoint, bucket, tmp_path)
        summary = await run_backfill(settings)
        assert (summary.replicated, summary.superseded, summary.errors) == (1, 0, 0)
        backend = FsBackend(tmp_path / "peer", "peer")
        assert await check_structure(backend) == {"ckpt/model.safetensors": b"".join(parts)}
        print(f"seaweedfs origin: multipart object of {summary.source_bytes} bytes replicated")
    finally:
        empty_and_delete_bucket(admin, bucket)
