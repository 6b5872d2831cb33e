"""A window is cut while the previous window's new chunks are still being
appended to the pack spool (pipeline/windows.py): only the read into the
appended window's buffer waits for them. The old loop waited for the
appends before it cut the next window, so an object of new chunks was
written and cut in turns instead of at once."""

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
from replicator.pipeline.windows import WindowPool
from replicator.store.backends import FsBackend
from replicator.store.backends.fs_spool import FsSpool
from replicator.store.format import pack_key
from replicator.store.index_cache import IndexCache
from replicator.store.spool import Piece

KIB = 1024
PARAMS = ChunkerParams(1024, 4096, 16384)
WINDOW = 64 * KIB
APPEND_SECONDS = 0.1

#: (start, end) of each spool append and each window's cut, on one clock.
appends: list[tuple[float, float]] = []
cuts: list[tuple[float, float]] = []
lock = threading.Lock()


class SlowSpool(FsSpool):
    def write(self, pieces: Sequence[Piece]) -> None:
        started = time.monotonic()
        time.sleep(APPEND_SECONDS)
        super().write(pieces)
        with lock:
            appends.append((started, time.monotonic()))


class SlowPeer(FsBackend):
    async def open_spool(self, prefix: str) -> FsSpool:
        directory = self._path(prefix)

        def run() -> FsSpool:
            self._ensure_dir(directory)
            return SlowSpool(directory, self._error)

        return await asyncio.to_thread(run)


class TimedChunker:
    """The native stream chunker, noting when each window is cut."""

    def __init__(self, params: ChunkerParams, threads: int = 1) -> None:
        self._inner = StreamChunker(params, threads=threads)

    def feed(self, data: memoryview) -> ChunkList:
        started = time.monotonic()
        out = self._inner.feed(data)
        with lock:
            cuts.append((started, time.monotonic()))
        return out

    def finish(self) -> ChunkList:
        return self._inner.finish()


async def test_a_window_is_cut_while_the_last_ones_appends_run(
    tmp_path: Path, caches: list[IndexCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(windows, "StreamChunker", TimedChunker)
    appends.clear()
    cuts.clear()
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
    # Cuts that began while an append (of an earlier window) was running.
    overlapped = [c for c in cuts if any(a0 < c[0] < a1 for a0, a1 in appends)]
    print(f"{len(cuts)} windows cut, {len(appends)} appends, {len(overlapped)} cuts during one")
    assert shipped.complete and shipped.size == len(data)
    assert shipped.digest == blake3_digest(data)
    assert len(overlapped) >= len(cuts) - 2
    # Every chunk as stored re-hashes to its digest: no window was refilled
    # while its appends still read it.
    placed = shipped.placements["peer"]
    names = await pack_names(placed)
    for i in range(len(placed)):
        got = await peer.get(
            pack_key(names[placed.pack_ix[i]]), placed.offsets[i], placed.lengths[i]
        )
        assert blake3_digest(got) == bytes(shipped.digests[i * 32 : (i + 1) * 32])
