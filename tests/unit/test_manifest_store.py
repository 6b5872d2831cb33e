"""The ManifestStore contract, over a real directory store.

``stores`` lists the implementations the contract runs on (formats 1/2
today; store format 3 adds its own line). The last tests pin what only the
object-per-manifest layout does, and how a bare Backend finds its peer's store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator._native import ChunkerParams, blake3_digest
from replicator.errors import NotFoundError
from replicator.pipeline.counting import CountingBackend
from replicator.store.backend import Backend
from replicator.store.backends import FsBackend
from replicator.store.bulk import holds_any
from replicator.store.format import (
    ChunkRef,
    Manifest,
    PackRun,
    SourceIdentity,
    StoreConfig,
    manifest_key,
    manifest_prefix,
)
from replicator.store.manifest_store import (
    ManifestStore,
    ObjectManifests,
    VersionEntry,
    entry_of_ref,
    entry_ref,
    manifest_store,
    manifests_of,
    split_manifest_prefix,
)
from replicator.store.peer import Peer
from replicator.store.versions import version_order

PARAMS = ChunkerParams(256, 1024, 4096)
#: name -> builder of a ManifestStore over a backend.
stores: dict[str, Callable[[Backend], ManifestStore]] = {
    "v2": lambda b: manifest_store(b, StoreConfig(PARAMS)),
    "v3": lambda b: manifest_store(b, StoreConfig(PARAMS, version=3)),
}


@pytest.fixture(params=sorted(stores))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ManifestStore:
    return stores[request.param](FsBackend(tmp_path, "peer"))


def manifest(
    key: str, t: int, *, observed: int = 0, bucket: str = "bkt", size: int = 3
) -> Manifest:
    ident = SourceIdentity("src", bucket, key, "", "", size, t, observed=observed)
    data = b"x" * size
    run = PackRun(b"\x01" * 32, 0, (ChunkRef(blake3_digest(data), size, size),))
    return Manifest(ident, False, blake3_digest(data), PARAMS, (run,))


async def test_put_many_answers_each_manifest_and_is_readable(store: ManifestStore) -> None:
    first = [manifest("a", 5), manifest("b", 7)]
    assert await store.put_many(first) == [True, True]
    again = await store.put_many([manifest("b", 7), manifest("c", 9), manifest("a", 5)])
    assert again == [False, True, False]
    assert await store.put_many([manifest("d", 1)]) == [True]
    assert await store.put_many([manifest("d", 1)]) == [False]
    entries = [e async for e in store.entries("bkt")]
    assert [(e.key, e.bucket) for e in entries] == [
        ("a", "bkt"),
        ("b", "bkt"),
        ("c", "bkt"),
        ("d", "bkt"),
    ]
    for e in entries:
        m = Manifest.from_bytes(await store.read(e))
        assert (m.identity.key, m.version_name) == (e.key, e.version_name)


async def test_listings_group_keys_and_order_versions(store: ManifestStore) -> None:
    ms = [
        manifest(k, t, observed=o)
        for k, t, o in [("k", 20, 0), ("k", 10, 0), ("k", 10, 1), ("k2", 5, 0)]
    ]
    ms.append(manifest("other", 1, bucket="b2"))
    assert await store.put_many(ms) == [True] * 5
    listed = [(k, [e.event_time_ns for e in vs]) async for k, vs in store.list_versions("bkt")]
    assert listed == [("k", [10, 10, 20]), ("k2", [5])]
    names = [
        e.version_name async for _, vs in store.list_versions("bkt", "k", exact=True) for e in vs
    ]
    orders = [o for n in names if (o := version_order(n)) is not None]
    assert len(orders) == 3 and orders == sorted(orders)
    latest = [(k, e.event_time_ns) async for k, e in store.latest("bkt")]
    assert latest == [("k", 20), ("k2", 5)]
    assert [k async for k, _ in store.latest("bkt", "k2")] == ["k2"]
    assert {e.bucket async for e in store.entries()} == {"bkt", "b2"}


async def test_versions_at_finds_one_key_at_one_event_time(store: ManifestStore) -> None:
    long_key = "p" * 200  # escaped, exactly one name piece; the next key continues it
    ms = [manifest("k", 10), manifest("k", 10, observed=1), manifest("k", 11), manifest("kk", 10)]
    ms += [manifest(long_key, 10), manifest(long_key + "q", 10)]
    await store.put_many(ms)
    wanted = [("k", f"{10:020d}-"), ("k", ""), ("kk", f"{11:020d}-"), ("none", ""), (long_key, "")]
    found = await store.versions_at("bkt", wanted)
    assert [len(f) for f in found] == [2, 3, 0, 0, 1]
    for (key, _), hits in zip(wanted, found, strict=True):
        for e, data in hits:
            m = Manifest.from_bytes(data)
            assert (e.key, e.bucket, m.identity.key, m.version_name) == (
                key,
                "bkt",
                key,
                e.version_name,
            )


async def test_a_removed_manifest_reads_as_not_found(store: ManifestStore, tmp_path: Path) -> None:
    m = manifest("gone", 3)
    await store.put_many([m])
    (entry,) = [e async for e in store.entries("bkt", "gone")]
    # Format 3: the manifest goes with its segment.
    await FsBackend(tmp_path, "peer").delete(entry.where[0] if entry.where else m.store_key())
    with pytest.raises(NotFoundError):
        await store.read(entry)


def test_refs_name_entries_of_either_layout() -> None:
    name = f"{5:020d}-000-{0:020d}-{'a' * 24}"
    v2 = VersionEntry(manifest_key("b", "a/k %", name), "a/k %", name, "b")
    assert entry_ref(v2) == v2.store_key
    assert entry_of_ref(entry_ref(v2)) == v2
    v3 = VersionEntry("seg#12", "a\nk", name, "b", ("segments/b/ab/abcd", 12, 345))
    assert entry_of_ref(entry_ref(v3)) == v3
    with pytest.raises(ValueError, match="not a manifest name"):
        entry_of_ref("packs/ab/abcd")


async def test_a_peer_backend_finds_its_store_through_wrappers(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "peer")
    peer = Peer("peer", backend, StoreConfig(PARAMS), "fs:x")
    assert isinstance(peer.manifests, ObjectManifests) and peer.manifests.backend is backend
    counting = CountingBackend(backend)
    found = manifests_of(counting)
    assert found.backend is counting  # requests through it are still counted
    assert manifests_of(peer.manifests) is peer.manifests
    assert isinstance(manifests_of(FsBackend(tmp_path, "bare")), ObjectManifests)
    await found.put_many([manifest("a", 1), manifest("b", 1)])
    assert counting.counts["put"] == 2


async def test_stray_objects_are_skipped_by_listings_but_not_hidden_from_entries(
    tmp_path: Path,
) -> None:
    backend = FsBackend(tmp_path, "peer")
    store = ObjectManifests(backend)
    await store.put_many([manifest("k", 1)])
    await backend.put("manifests/bkt/k/not-a-version", b"{}")
    await backend.put("manifests/stray", b"{}")
    assert [e.version_name async for e in store.entries()][-1] == "not-a-version"
    assert [len(vs) async for _, vs in store.list_versions("bkt")] == [1]
    assert [k async for k, _ in store.latest("bkt")] == ["k"]


@given(st.text(max_size=8) | st.text(min_size=190, max_size=230), st.text(max_size=260))
def test_a_manifest_prefix_splits_back_into_bucket_and_key_prefix(bucket: str, prefix: str) -> None:
    assert split_manifest_prefix(manifest_prefix(bucket, prefix)) == (bucket, prefix)


def test_other_prefixes_are_not_split() -> None:
    assert split_manifest_prefix("packs/ab/") is None
    assert split_manifest_prefix("manifests/") is None
    assert split_manifest_prefix("manifests/bkt") is None  # no '/' ends the bucket yet


async def test_holds_any_on_a_manifests_prefix_asks_the_peers_store(tmp_path: Path) -> None:
    """A caller still asking bulk.holds_any about a raw manifests/ prefix gets
    the peer's answer on a store that keeps manifests elsewhere (format 3)."""
    pytest.importorskip("replicator.store.segment_store")
    backend = FsBackend(tmp_path, "peer")
    peer = Peer("peer", backend, StoreConfig(PARAMS, version=3), "fs:v3")
    assert not isinstance(peer.manifests, ObjectManifests)
    assert not await holds_any(backend, manifest_prefix("bkt", ""))
    await peer.manifests.put_many([manifest("dir/k", 5)])
    assert not await holds_any(backend, "manifests/"), "nothing is stored under manifests/"
    for prefix, held in [
        ("", True),
        ("dir/", True),
        ("dir/k", True),
        ("dir/x", False),
        ("e", False),
    ]:
        assert await holds_any(CountingBackend(backend), manifest_prefix("bkt", prefix)) is held
