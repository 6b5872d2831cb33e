"""Opening a peer's caches writes nothing when nothing changed.

Every ``replicator backfill`` opens the index cache and the segment header
table. A write at open (the store configuration row, rewritten with the
same bytes) started a new WAL with two syncs, and the close then
checkpointed it with two more: eight syncs on a run that copied nothing
(docs/performance.md, "boot2"). The index cache's sync of an unchanged
peer writes nothing either."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from replicator._native import blake3_digest
from replicator.store.backends import FsBackend
from replicator.store.format import IndexEntry, PackIndex, index_key
from replicator.store.index_cache import IndexCache
from replicator.store.segment_cache import HeaderTable


def _config_row(path: Path, table: str) -> bytes:
    db = sqlite3.connect(path)
    try:
        row = db.execute(f"SELECT value FROM {table} WHERE key='config'").fetchone()
    finally:
        db.close()
    return bytes(row[0])


async def test_index_cache_reopened_with_the_same_config_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    first = IndexCache(path, b"config-1")
    await first.open()
    assert first.db.total_changes == 1  # a new cache records its configuration
    await first.close()

    again = IndexCache(path, b"config-1")
    await again.open()
    changes = again.db.total_changes
    await again.close()
    print(f"changes on reopen: {changes}")
    assert changes == 0
    assert not path.with_name(path.name + "-wal").exists()

    other = IndexCache(path, b"config-2")
    await other.open()
    await other.close()
    assert _config_row(path, "meta") == b"config-2"


def test_header_table_reopened_with_the_same_config_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.segments.sqlite"
    HeaderTable(path, b"config-1").close()

    again = HeaderTable(path, b"config-1")
    changes = again._db.total_changes
    again.close()
    print(f"changes on reopen: {changes}")
    assert changes == 0

    other = HeaderTable(path, b"config-2")
    other.close()
    assert _config_row(path, "seg_meta") == b"config-2"


async def test_index_cache_sync_of_an_unchanged_peer_writes_nothing(tmp_path: Path) -> None:
    """A re-run's sync notes the listed packs in a temporary table instead of
    stamping every known row: with nothing new or gone at the peer, the cache
    file's WAL stays empty (no syncs at the sync, none at close)."""
    peer = FsBackend(tmp_path / "peer", "peer", page_size=2)
    indexes = [_index(i) for i in range(5)]
    for ix in indexes:
        data = ix.to_bytes()
        await peer.put(index_key(ix.pack), data, sha256=hashlib.sha256(data).digest())
    path = tmp_path / "c.sqlite"
    first = IndexCache(path, b"config-1")
    await first.open()
    assert (await first.sync(peer)).loaded == 5
    await first.close()

    again = IndexCache(path, b"config-1")
    await again.open()
    stats = await again.sync(peer)
    wal = path.with_name(path.name + "-wal").stat().st_size
    await peer.delete(index_key(indexes[0].pack))
    gone = await again.sync(peer)  # the sweep still drops what vanished
    await again.close()
    await peer.close()
    print(f"WAL after an unchanged sync: {wal} bytes")
    assert (stats.loaded, stats.dropped, stats.packs) == (0, 0, 5)
    assert wal == 0
    assert (gone.loaded, gone.dropped, gone.packs) == (0, 1, 4)


def _index(seed: int) -> PackIndex:
    digests = [blake3_digest(f"{seed}-{i}".encode()) for i in range(3)]
    entries = tuple(IndexEntry(d, i * 100, 100, 100) for i, d in enumerate(digests))
    return PackIndex(blake3_digest(f"pack-{seed}".encode()), 300, entries)
