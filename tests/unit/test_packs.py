"""The pack writer against a real filesystem peer and a real index cache."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replicator._native import blake3_digest
from replicator.errors import ConfigError, TransientStoreError
from replicator.pipeline.durable import SealBudget, resolve
from replicator.pipeline.plan import PackWriter
from replicator.store.backend import Backend, ObjectInfo, Payload
from replicator.store.backends import FsBackend
from replicator.store.backends.fs_spool import FsSpool
from replicator.store.format import PackIndex, index_key, pack_key
from replicator.store.index_cache import IndexCache

KIB = 1024


class Batch:
    """A ChunkBatch over a list of byte strings."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.asked: list[int] = []

    def __len__(self) -> int:
        return len(self.chunks)

    def digest(self, i: int) -> bytes:
        return blake3_digest(self.chunks[i])

    def length(self, i: int) -> int:
        return len(self.chunks[i])

    def data(self, i: int) -> memoryview:
        self.asked.append(i)
        return memoryview(self.chunks[i])


class Recording(FsBackend):
    """A real FsBackend that records the order of its writes and HEADs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "peer")
        self.log: list[str] = []
        self.fail_puts = False

    async def put(self, key: str, data: Payload, *, sha256: bytes | None = None) -> None:
        if self.fail_puts:
            raise TransientStoreError("peer down")
        await super().put(key, data, sha256=sha256)
        self.log.append("put " + key.split("/", 1)[0])

    async def put_spool(self, key: str, spool: FsSpool) -> None:
        if self.fail_puts:
            raise TransientStoreError("peer down")
        await super().put_spool(key, spool)
        self.log.append("put " + key.split("/", 1)[0])

    async def head(self, key: str) -> ObjectInfo | None:
        self.log.append("head " + key.split("/", 1)[0])
        return await super().head(key)


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[Recording]:
    b = Recording(tmp_path / "peer")
    yield b
    await b.close()


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[IndexCache]:
    c = IndexCache(tmp_path / "cache.sqlite", b"cfg")
    await c.open()
    yield c
    await c.close()


async def _check_pack(backend: Backend, name: bytes) -> PackIndex:
    """The stored pack is named by its BLAKE3 and every indexed chunk verifies."""
    data = await backend.get(pack_key(name))
    assert blake3_digest(data) == name
    index = PackIndex.from_bytes(await backend.get(index_key(name)))
    assert index.size == len(data)
    for e in index.entries:
        if e.compression == "none":
            assert blake3_digest(data[e.offset : e.offset + e.length]) == e.digest
    return index


async def test_new_chunks_shipped_once_and_repeats_deduplicated(
    peer: Recording, cache: IndexCache
) -> None:
    writer = PackWriter("peer", peer, cache, pack_size=1024 * KIB)
    a, b, c = os.urandom(10 * KIB), os.urandom(20 * KIB), os.urandom(30 * KIB)
    first = Batch([a, b, a])  # a repeats inside the batch
    p1 = await writer.place(first)
    second = Batch([b, c])  # b repeats across batches, still in the open pack
    p2 = await writer.place(second)
    assert first.asked == [0, 1] and second.asked == [1], "bytes read for new chunks only"
    assert [p.new for p in p1 + p2] == [True, True, False, False, True]
    assert writer.stats.shipped_bytes == 60 * KIB
    assert writer.stats.deduplicated_bytes == 30 * KIB
    assert peer.log == [], "nothing is written before the pack is sealed"

    await writer.flush()
    locs = await resolve(p1 + p2)
    assert {loc.pack for loc in locs} == {locs[0].pack}
    index = await _check_pack(peer, locs[0].pack)
    assert len(index.entries) == 3
    assert locs[2] == locs[0] and locs[3] == locs[1]
    assert peer.log == ["put packs", "put index"], "pack before index"
    print("placed 5 chunks (110 KiB): shipped 60 KiB in 1 pack, deduplicated 30 KiB")


async def test_pack_seals_at_pack_size_and_manifest_waits_for_it(
    peer: Recording, cache: IndexCache
) -> None:
    writer = PackWriter("peer", peer, cache, pack_size=64 * KIB)
    small = await writer.place(Batch([os.urandom(16 * KIB)]))
    waiting = asyncio.create_task(resolve(small))
    await asyncio.sleep(0)
    assert not waiting.done(), "no location before the pack is durable"
    # Crossing pack_size seals the open pack (with the earlier chunk in it).
    await writer.place(Batch([os.urandom(40 * KIB), os.urandom(40 * KIB)]))
    [loc] = await waiting
    assert writer.stats.packs == 1
    assert peer.log == ["put packs", "put index"]
    await _check_pack(peer, loc.pack)
    # The sealed pack is now in the cache: the same chunk is deduplicated.
    again = await writer.place(Batch([await peer.get(pack_key(loc.pack), 0, 16 * KIB)]))
    assert not again[0].new and again[0].pack == loc.pack
    assert "head packs" not in peer.log, "a pack written in this run needs no HEAD"


async def test_stale_cache_hint_is_headed_once_and_missing_pack_reshipped(
    tmp_path: Path, peer: Recording, cache: IndexCache
) -> None:
    chunk = os.urandom(8 * KIB)
    earlier = PackWriter("peer", peer, cache, pack_size=1024 * KIB)
    [p] = await earlier.place(Batch([chunk]))
    await earlier.flush()
    [loc] = await resolve([p])

    # A new run (new writer): the hint is checked by one HEAD, then trusted.
    run2 = PackWriter("peer", peer, cache, pack_size=1024 * KIB)
    peer.log.clear()
    for _ in range(3):
        [q] = await run2.place(Batch([chunk]))
        assert q.pack == loc.pack and not q.new
    assert peer.log == ["head packs"]

    # The pack disappears behind the cache's back (pruned, lost).
    os.remove(tmp_path / "peer" / pack_key(loc.pack))
    run3 = PackWriter("peer", peer, cache, pack_size=1024 * KIB)
    [r] = await run3.place(Batch([chunk]))
    assert r.new and run3.stats.packs_missing == 1
    assert await cache.packs() == set(), "the stale pack is forgotten"
    await run3.flush()
    [loc3] = await resolve([r])
    await _check_pack(peer, loc3.pack)


async def test_failed_seal_fails_every_waiter_and_writer_recovers(
    peer: Recording, cache: IndexCache
) -> None:
    writer = PackWriter("peer", peer, cache, pack_size=1024 * KIB)
    placed = await writer.place(Batch([os.urandom(4 * KIB)]))
    peer.fail_puts = True
    await writer.flush()  # packs are written in the background: flush only waits
    with pytest.raises(TransientStoreError):
        await resolve(placed)  # the failure reaches every manifest waiting on the pack
    peer.fail_puts = False
    chunk = os.urandom(4 * KIB)
    again = await writer.place(Batch([chunk]))
    await writer.flush()
    [loc] = await resolve(again)
    await _check_pack(peer, loc.pack)
    assert peer.log == ["put packs", "put index"]


async def test_seal_budget_seals_open_packs_when_enough_manifests_wait(
    tmp_path: Path, cache: IndexCache
) -> None:
    peers = [Recording(tmp_path / f"p{i}") for i in range(2)]
    caches = [cache, IndexCache(tmp_path / "c2.sqlite", b"cfg")]
    await caches[1].open()
    writers = [PackWriter(f"p{i}", peers[i], caches[i], 1024 * KIB) for i in range(2)]
    budget = SealBudget(writers, limit=2)
    one = [await w.place(Batch([os.urandom(KIB)])) for w in writers]
    first = asyncio.create_task(budget.wait(one))
    await asyncio.sleep(0)
    assert not first.done() and budget.waiting == 1
    two = [await w.place(Batch([os.urandom(KIB)])) for w in writers]
    results = await asyncio.gather(first, budget.wait(two))
    assert [len(r) for r in results] == [2, 2]
    assert all(w.stats.packs == 1 for w in writers), "both objects in one pack per peer"
    await caches[1].close()
    for p in peers:
        await p.close()


async def test_unknown_compression_is_refused(peer: Recording, cache: IndexCache) -> None:
    with pytest.raises(ConfigError, match="compression"):
        PackWriter("peer", peer, cache, 1024 * KIB, compression="lz4")


async def test_zstd_stores_compressible_chunks_smaller_and_others_raw(
    peer: Recording, cache: IndexCache
) -> None:
    import zstandard  # noqa: PLC0415 - a dependency of replicator

    text = b"the same words again and again " * 1000
    noise = os.urandom(20 * KIB)
    writer = PackWriter("peer", peer, cache, 1024 * KIB, compression="zstd")
    placed = await writer.place(Batch([text, noise]))
    await writer.flush()
    locs = await resolve(placed)
    assert [loc.compression for loc in locs] == ["zstd", "none"]
    assert locs[0].stored_length < len(text) // 10 and locs[1].stored_length == len(noise)
    assert writer.stats.shipped_bytes == len(text) + len(noise)
    assert writer.stats.stored_bytes == locs[0].stored_length + len(noise)
    pack = await peer.get(pack_key(locs[0].pack))
    z = pack[locs[0].offset : locs[0].offset + locs[0].stored_length]
    assert zstandard.ZstdDecompressor().decompress(z, max_output_size=len(text)) == text
    index = PackIndex.from_bytes(await peer.get(index_key(locs[0].pack)))
    assert [(e.length, e.compression) for e in index.entries] == [
        (len(text), "zstd"),
        (len(noise), "none"),
    ]
    # A later run finds the compressed chunk through the cache, compression and all.
    again = await PackWriter("peer", peer, cache, 1024 * KIB).place(Batch([text]))
    assert (again[0].compression, again[0].stored_length) == ("zstd", locs[0].stored_length)


class Gated(Recording):
    """Pack PUTs wait for ``gate``: a peer whose writes are slow."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = asyncio.Event()

    async def put_spool(self, key: str, spool: FsSpool) -> None:
        await self.gate.wait()
        await super().put_spool(key, spool)


async def test_pack_written_in_background_while_the_next_fills(
    tmp_path: Path, cache: IndexCache
) -> None:
    peer = Gated(tmp_path / "peer")
    writer = PackWriter("peer", peer, cache, pack_size=16 * KIB)
    a, b = os.urandom(20 * KIB), os.urandom(20 * KIB)
    [pa] = await writer.place(Batch([a]))  # fills and seals the first pack
    # Its PUT is still waiting, yet placing goes on into the next pack, and a
    # repeat of ``a`` refers to the pack being written instead of shipping again.
    [again] = await writer.place(Batch([a]))
    assert pa.new and not again.new and again.pack is pa.pack
    assert peer.log == [], "nothing is durable yet"
    # Spooled packs hold no memory: a second one is sealed while the first
    # is being written, and the third seal waits for a write slot.
    [pb] = await writer.place(Batch([b]))
    c = os.urandom(20 * KIB)
    third = asyncio.create_task(writer.place(Batch([c])))
    await asyncio.sleep(0.05)
    assert not third.done()
    peer.gate.set()
    [pc] = await third
    await writer.flush()
    [la, la2, lb, lc] = await resolve([pa, again, pb, pc])
    assert la == la2 and len({la.pack, lb.pack, lc.pack}) == 3
    assert sorted(peer.log) == sorted(["put packs", "put index"] * 3)
    assert writer.stats.shipped_bytes == 60 * KIB
    assert writer.stats.deduplicated_bytes == 20 * KIB
