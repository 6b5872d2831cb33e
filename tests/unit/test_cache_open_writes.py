"""Opening a peer's caches writes nothing when nothing changed.

Every ``replicator backfill`` opens the index cache and the segment header
table. A write at open (the store configuration row, rewritten with the
same bytes) started a new WAL with two syncs, and the close then
checkpointed it with two more: eight syncs on a run that copied nothing
(docs/performance.md, "boot2")."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
