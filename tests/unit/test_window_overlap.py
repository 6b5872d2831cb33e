"""A window is cut while the previous window's new chunks are still being
appended to the pack spool (pipeline/windows.py): only the read into the
appended window's buffer waits for them. The old loop waited for the
appends before it cut the next window, so an object of new chunks was
written and cut in turns instead of at once. (Since the ai room's second
pass the next cut starts before the batch is even placed: an append then
overlaps a cut that started before it, so a cut lasts a while here.)"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from replicator._native import ChunkerParams, ChunkList, StreamChunker, blake3_digest
from replicator.origins.fs import FsOrigin
from replicator.pipeline import windows
from replicator.pipeline.durable import pack_names
from replicator.pipeline.plan import PackWriter
from replicator.pipeline.ship import ship
from replicator.pipeline.windows import Previous, PreviousTree, WindowPool
from replicator.store.backends import FsBackend
from replicator.store.backends.fs_spool import FsSpool
from replicator.store.format import pack_key
from replicator.store.index_cache import IndexCache
from replicator.store.spool import Piece

KIB = 1024
PARAMS = ChunkerParams(1024, 4096, 16384)
WINDOW = 64 * KIB
#: How long an append waits for a cut to start before it writes (a bound,
#: not a timing: on the new code a cut starts at once, on the old one never).
WAIT_FOR_CUT_SECONDS = 5.0

#: Whether a window's cut ran while each spool append was running.
appends: list[bool] = []
cuts: list[float] = []
#: Cuts in progress (0 or 1: an object's cuts are sequential).
running: list[int] = [0]
#: How long each cut lasts at least: a 64 KiB window is cut in microseconds,
#: before an append started after it could see it.
CUT_SECONDS = 0.05
cut_started = threading.Condition()
#: Set when the object's last window is cut: no append waits for a cut then.
finished: list[bool] = []


class SlowSpool(FsSpool):
    """An append that holds on until a cut runs (or the bound passes)."""

    def write(self, pieces: Sequence[Piece]) -> None:
        with cut_started:
            cut_started.wait_for(lambda: running[0] > 0 or finished, WAIT_FOR_CUT_SECONDS)
            overlapped = running[0] > 0
        super().write(pieces)
        with cut_started:
            appends.append(overlapped)


class SlowPeer(FsBackend):
    async def open_spool(self, prefix: str) -> FsSpool:
        directory = self._path(prefix)

        def run() -> FsSpool:
            self._ensure_dir(directory)
            return SlowSpool(directory, self._error)

        return await asyncio.to_thread(run)


class TimedChunker:
    """The native stream chunker, noting when each window is cut."""

    def __init__(
        self,
        params: ChunkerParams,
        threads: int = 1,
        previous: Previous | None = None,
        previous_tree: PreviousTree | None = None,
    ) -> None:
        self._inner = StreamChunker(
            params, threads=threads, previous=previous, previous_tree=previous_tree
        )

    @property
    def subtrees(self) -> bytes:
        return self._inner.subtrees

    def feed(self, data: memoryview) -> ChunkList:
        with cut_started:
            cuts.append(time.monotonic())
            running[0] += 1
            cut_started.notify_all()
        try:
            time.sleep(CUT_SECONDS)
            return self._inner.feed(data)
        finally:
            with cut_started:
                running[0] -= 1

    def finish(self) -> ChunkList:
        with cut_started:
            finished.append(True)
            cut_started.notify_all()
        return self._inner.finish()


async def test_a_window_is_cut_while_the_last_ones_appends_run(
    tmp_path: Path, caches: list[IndexCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(windows, "StreamChunker", TimedChunker)
    appends.clear()
    cuts.clear()
    running[0] = 0
    finished.clear()
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(6 * WINDOW + 999)  # random: every chunk is new
    (src / "f").write_bytes(data)
    await asyncio.sleep(0.05)  # past the racy-clean window of the file's ctime
    origin = FsOrigin(src)
    [obj] = [o async for o in origin.list()]
    peer = SlowPeer(tmp_path / "peer", "peer")
    writer = PackWriter("peer", peer, caches[0], 64 * 1024 * KIB)
    reader = await origin.open(obj)
    try:
        shipped = await ship(reader, PARAMS, WINDOW, [writer], pool=WindowPool())
    finally:
        await reader.close()
    await writer.flush()
    # Appends during which the next window's cut started.
    overlapped = sum(appends)
    print(f"{len(cuts)} windows cut, {len(appends)} appends, {overlapped} with a cut during them")
    assert shipped.complete and shipped.size == len(data)
    assert shipped.digest == blake3_digest(data)
    assert overlapped >= len(cuts) - 2
    # Every chunk as stored re-hashes to its digest: no window was refilled
    # while its appends still read it.
    placed = shipped.placements["peer"]
    names = await pack_names(placed)
    for i in range(len(placed)):
        got = await peer.get(
            pack_key(names[placed.pack_ix[i]]), placed.offsets[i], placed.lengths[i]
        )
        assert blake3_digest(got) == bytes(shipped.digests[i * 32 : (i + 1) * 32])
