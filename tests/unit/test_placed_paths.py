"""Compact placements (store/placed.py) on every path that places chunks,
and spooled packs under per-peer outcomes (the merge of large into int)."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from replicator._native import ChunkerParams, chunk_buffer
from replicator.origins import ObjectVersion
from replicator.origins.fs import FsOrigin
from replicator.pipeline.durable import SealBudget, pack_names
from replicator.pipeline.manifests import placed_manifest
from replicator.pipeline.plan import OpenPack, PackWriter
from replicator.pipeline.ship import ship
from replicator.pipeline.small import ship_many
from replicator.store.backends import FsBackend
from replicator.store.backends.fs_spool import FsSpool
from replicator.store.format import SourceIdentity, pack_key
from replicator.store.index_cache import IndexCache
from replicator.store.placed import Placed
from replicator.store.spool import Piece
from tests.unit.test_packs import Batch

KIB = 1024
PARAMS = ChunkerParams(1024, 4096, 16384)


class FullSpool(FsSpool):
    """A spool on a disk that is full: every append fails as the OS says."""

    def write(self, pieces: Sequence[Piece]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._tmp.path))


class FullDisk(FsBackend):
    async def open_spool(self, prefix: str) -> FsSpool:
        real = await super().open_spool(prefix)  # makes the directory
        real.discard()
        return FullSpool(self._path(prefix), self._error)


async def settled_object(tmp_path: Path, size: int) -> tuple[FsOrigin, ObjectVersion]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "obj").write_bytes(os.urandom(size))
    st = os.stat(src / "obj")
    obj = ObjectVersion("obj", st.st_size, st.st_ctime_ns, mtime_ns=st.st_mtime_ns, inode=st.st_ino)
    await asyncio.sleep(0.05)  # past the racy-clean window of the file's ctime
    return FsOrigin(src), obj


async def test_a_failed_spool_append_fails_that_peer_only(
    tmp_path: Path, caches: list[IndexCache]
) -> None:
    """A full disk at one peer fails that peer's pack (its manifest), not
    the read: the other peer gets its whole copy from the same read."""
    origin, obj = await settled_object(tmp_path, 512 * KIB)
    full = PackWriter("full", FullDisk(tmp_path / "full", "full"), caches[0], 64 * KIB)
    good_peer = FsBackend(tmp_path / "good", "good")
    good = PackWriter("good", good_peer, caches[1], 64 * KIB)
    reader = await origin.open(obj)
    try:
        # Windows of 64 KiB: the failed appends of one window are waited for
        # before its buffer is refilled, many times over.
        shipped = await ship(reader, PARAMS, 64 * KIB, [full, good])
    finally:
        await reader.close()
    assert shipped.size == obj.size and not shipped.failures
    await asyncio.gather(full.flush(), good.flush())
    with pytest.raises(Exception, match="full") as caught:
        await pack_names(shipped.placements["full"])
    print(f"the full peer's pack: {caught.value}")
    names = await pack_names(shipped.placements["good"])
    assert names and all([await good_peer.head(pack_key(n)) for n in names])
    published = [p for p in (tmp_path / "full" / "packs").rglob("*") if p.is_file()]
    assert not published, "nothing published at the full peer"


async def test_wait_placed_seals_an_open_pack_on_time(
    caches: list[IndexCache], tmp_path: Path
) -> None:
    """The daemon's lanes wait on compact placements: their time-based seal
    still applies (one budget, armed from ``Placed.packs``)."""
    peer = FsBackend(tmp_path / "peer", "peer")
    writer = PackWriter("peer", peer, caches[0], 64 * KIB)
    budget = SealBudget([writer], limit=100, max_delay=0.2)
    placed = Placed()
    await writer.place_into(Batch([os.urandom(KIB)]), placed)
    assert isinstance(placed.packs[0], OpenPack)
    started = time.monotonic()
    [[name]] = await asyncio.wait_for(budget.wait_placed([placed]), timeout=30)
    print(f"sealed {time.monotonic() - started:.3f} s after the wait began (0.2 s delay)")
    assert writer.stats.packs == 1 and await peer.head(pack_key(name)) is not None
    budget.close()


async def test_a_small_batch_gives_each_object_its_own_compact_placements(
    tmp_path: Path, caches: list[IndexCache]
) -> None:
    """ship_many places a batch as one chunk batch and splits it again per
    object: each object's manifest reads back exactly its bytes."""
    datas = [os.urandom(n) for n in (3 * KIB, 40 * KIB, 7 * KIB)]
    datas.append(datas[0])  # a repeat within the batch: deduplicated
    backend = FsBackend(tmp_path / "peer", "peer")
    writer = PackWriter("peer", backend, caches[0], 1024 * KIB)
    batch = await ship_many(datas, PARAMS, [writer])
    await writer.flush()
    shipped = [batch.shipped(k) for k in range(len(batch))]
    assert [s.size for s in shipped] == batch.sizes == [len(d) for d in datas]
    assert shipped[3].placements["peer"].shipped_bytes() == 0
    for data, one in zip(datas, shipped, strict=True):
        placed = one.placements["peer"]
        assert len(placed) == len(chunk_buffer(data, PARAMS))
        ident = SourceIdentity("fs", "b", "k", "", "e", len(data), 1)
        m = placed_manifest(
            ident, one.digest, PARAMS, one.digests, placed=placed, names=await pack_names(placed)
        )
        back = b""
        for run in m.runs:
            size = sum(c.stored_length for c in run.chunks)
            back += await backend.get(pack_key(run.pack), run.offset, size)
        assert back == data
