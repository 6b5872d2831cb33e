"""The index cache against a real filesystem peer (FsBackend)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replicator._native import blake3_digest
from replicator.store.backends import FsBackend
from replicator.store.format import IndexEntry, PackIndex, index_key
from replicator.store.index_cache import MAX_SKIP_REPORTS, IndexCache, Location, cache_path


def _index(seed: int, chunks: int = 3) -> PackIndex:
    digests = [blake3_digest(f"{seed}-{i}".encode()) for i in range(chunks)]
    entries = tuple(IndexEntry(d, i * 100, 100, 100) for i, d in enumerate(digests))
    return PackIndex(blake3_digest(f"pack-{seed}".encode()), chunks * 100, entries)


async def _put_index(backend: FsBackend, ix: PackIndex) -> None:
    data = ix.to_bytes()
    await backend.put(index_key(ix.pack), data, sha256=hashlib.sha256(data).digest())


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[FsBackend]:
    backend = FsBackend(tmp_path / "peer", "peer", page_size=2)
    yield backend
    await backend.close()


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[IndexCache]:
    c = IndexCache(tmp_path / "cache.sqlite", b"config-1")
    await c.open()
    yield c
    await c.close()


async def test_record_lookup_forget(cache: IndexCache) -> None:
    a, b = _index(1), _index(2)
    await cache.record(a)
    await cache.record(b)
    wanted = [a.entries[0].digest, b.entries[2].digest, blake3_digest(b"absent")]
    found = await cache.lookup(wanted)
    assert found == {
        a.entries[0].digest: Location(a.pack, 0, 100, 100),
        b.entries[2].digest: Location(b.pack, 200, 100, 100),
    }
    await cache.forget_pack(a.pack)
    assert await cache.lookup(wanted) == {b.entries[2].digest: Location(b.pack, 200, 100, 100)}
    assert await cache.packs() == {b.pack}


async def test_lookup_batches_past_sqlite_parameter_limit(cache: IndexCache) -> None:
    big = _index(7, chunks=1200)
    await cache.record(big)
    found = await cache.lookup([e.digest for e in big.entries])
    assert len(found) == 1200
    assert found[big.entries[1100].digest].offset == 110000


async def test_sync_loads_missing_and_drops_vanished(cache: IndexCache, peer: FsBackend) -> None:
    indexes = [_index(i) for i in range(5)]
    for ix in indexes:
        await _put_index(peer, ix)
    stale = _index(99)
    await cache.record(stale)  # known to the cache, but its index is not at the peer
    stats = await cache.sync(peer)
    assert (stats.loaded, stats.dropped, stats.packs) == (5, 1, 5)
    assert await cache.packs() == {ix.pack for ix in indexes}
    assert await cache.lookup([stale.entries[0].digest]) == {}

    await peer.delete(index_key(indexes[0].pack))
    stats = await cache.sync(peer)  # second sync: nothing to load, one to drop
    assert (stats.loaded, stats.dropped, stats.packs) == (0, 1, 4)
    print(f"synced 5 index objects over pages of 2, dropped {stats.dropped + 1} in total")


async def test_cache_survives_reopen_and_is_wiped_for_another_store(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    ix = _index(3)
    first = IndexCache(path, b"config-1")
    await first.open()
    await first.record(ix)
    await first.close()

    same = IndexCache(path, b"config-1")
    await same.open()
    assert await same.packs() == {ix.pack}
    await same.close()

    # The peer was recreated with other parameters: the old hints must go.
    other = IndexCache(path, b"config-2")
    await other.open()
    assert await other.packs() == set()
    await other.close()


def test_cache_path_is_per_peer(tmp_path: Path) -> None:
    a = cache_path(tmp_path, "fs:/a")
    assert a == cache_path(tmp_path, "fs:/a")
    assert a != cache_path(tmp_path, "fs:/b")
    assert a.parent == tmp_path


async def test_damaged_cache_file_is_rebuilt_from_the_peer(tmp_path: Path, peer: FsBackend) -> None:
    ix = _index(5)
    await _put_index(peer, ix)
    path = tmp_path / "damaged.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = IndexCache(path, b"config-1")
    await cache.open()
    assert (await cache.sync(peer)).loaded == 1
    assert await cache.lookup([ix.entries[1].digest]) == {
        ix.entries[1].digest: Location(ix.pack, 100, 100, 100)
    }
    await cache.close()


async def test_sync_skips_stray_and_garbage_index_objects(
    peer: FsBackend, cache: IndexCache
) -> None:
    good = _index(1)
    await _put_index(peer, good)
    await peer.put("index/zz/stray.txt", b"not an index")
    garbage = index_key(blake3_digest(b"garbage"))
    await peer.put(garbage, b"{garbage")
    lying = _index(2)
    await peer.put(index_key(blake3_digest(b"other")), lying.to_bytes())
    stats = await cache.sync(peer)
    assert stats.packs == 1 and stats.loaded == 1 and stats.skipped == 3
    reports = "\n".join(stats.skip_reports)
    assert f"destination '{peer.name}': skipped {garbage}: pack index is not valid JSON" in reports
    assert "describes pack" in reports
    assert "skipped index/zz/stray.txt: not an index name" in reports
    assert await cache.lookup([e.digest for e in good.entries])
    for i in range(MAX_SKIP_REPORTS + 5):
        await peer.put(f"index/{i:02x}/stray", b"")
    stats = await cache.sync(peer)
    assert stats.skipped == MAX_SKIP_REPORTS + 5 + 3
    assert len(stats.skip_reports) == MAX_SKIP_REPORTS  # bounded, whatever the peer holds
