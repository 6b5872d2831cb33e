"""``ship()``: the one per-peer window loop of backfill and the daemon's lanes
(the daemon's ``fanout.fan_out`` was folded into it), and the one read-window
rule both paths size their reads by."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from replicator._native import ChunkerParams
from replicator.pipeline.durable import pack_names
from replicator.pipeline.plan import PackWriter
from replicator.pipeline.ship import SMALL_WINDOW, byte_counts, read_window, ship
from replicator.store.backends import FsBackend
from replicator.store.backends.fs_spool import FsSpool
from replicator.store.format import pack_key
from replicator.store.index_cache import IndexCache
from tests.unit.test_placed_paths import settled_object

KIB = 1024
PARAMS = ChunkerParams(1024, 4096, 16384)


class Unwritable(FsBackend):
    """A peer whose packs directory cannot be written (its planning step fails)."""

    async def open_spool(self, prefix: str) -> FsSpool:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), prefix)


def test_read_window_fits_the_object_and_never_exceeds_the_origins() -> None:
    for size in (0, 1, SMALL_WINDOW - 1, SMALL_WINDOW, 3 * SMALL_WINDOW + 5, 100 * SMALL_WINDOW):
        window = read_window(size, 8 * 1024 * KIB)
        print(f"size {size}: window {window}")
        # The +1 byte lets the first read see the end of the file.
        assert window % SMALL_WINDOW == 0 and window >= min(size + 1, 8 * 1024 * KIB)
        assert window - SMALL_WINDOW < size + 1
    assert read_window(100 * 1024 * KIB, 8 * 1024 * KIB) == 8 * 1024 * KIB


async def test_a_failing_writer_drops_out_and_the_other_gets_the_whole_object(
    tmp_path: Path, caches: list[IndexCache]
) -> None:
    """As the daemon's lanes need: one peer failing costs the other nothing,
    and the read is complete for the peer that stayed."""
    origin, obj = await settled_object(tmp_path, 300 * KIB)
    bad = PackWriter("bad", Unwritable(tmp_path / "bad", "bad"), caches[0], 64 * KIB)
    good_peer = FsBackend(tmp_path / "good", "good")
    good = PackWriter("good", good_peer, caches[1], 64 * KIB)
    reader = await origin.open(obj)
    try:
        shipped = await ship(reader, PARAMS, read_window(obj.size, 1024 * KIB), [bad, good])
    finally:
        await reader.close()
    print(f"failures: {shipped.failures}")
    assert shipped.complete and shipped.size == obj.size
    assert isinstance(shipped.failures["bad"], PermissionError)
    assert list(shipped.placements) == ["good"]
    await good.flush()
    names = await pack_names(shipped.placements["good"])
    assert names and all([await good_peer.head(pack_key(n)) for n in names])
    assert byte_counts(shipped.placements["good"]) == (obj.size, 0)


async def test_when_every_writer_fails_the_read_stops_incomplete(
    tmp_path: Path, caches: list[IndexCache]
) -> None:
    """Nothing is left to read for: the object is not complete (the daemon
    then commits nothing for it; each lane backs off and keeps it wanted)."""
    origin, obj = await settled_object(tmp_path, 300 * KIB)
    writers = [
        PackWriter(f"bad{i}", Unwritable(tmp_path / f"bad{i}", f"bad{i}"), caches[i], 64 * KIB)
        for i in range(2)
    ]
    reader = await origin.open(obj)
    try:
        shipped = await ship(reader, PARAMS, 64 * KIB, writers)
    finally:
        await reader.close()
    assert not shipped.complete and not shipped.placements
    assert sorted(shipped.failures) == ["bad0", "bad1"]
