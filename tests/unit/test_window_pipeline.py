"""The next window's cut starts before a window's batch is handed on
(pipeline/windows.py, ai room's second pass): the native threads cut window
k+1 while the caller places batch k (index look-ups, pack bookkeeping,
spool appends). The old loop handed batch k on first and started cutting
k+1 only once the caller asked for the next batch, so the native threads
were idle during every placement (a third of the two cores of the AI
update's last large file)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import cast

import pytest

from replicator._native import ChunkerParams, ChunkList, StreamChunker, blake3_digest
from replicator.origins import ObjectReader
from replicator.origins.fs import FsOrigin
from replicator.pipeline import windows
from replicator.pipeline.windows import (
    Chunked,
    Previous,
    PreviousTree,
    WindowChunks,
    WindowPool,
    chunk_windows,
)

KIB = 1024
PARAMS = ChunkerParams(1024, 4096, 16384)
WINDOW = 64 * KIB


#: A bound, not a timing: on the new code the next feed is already submitted
#: when a batch arrives; on the old one it never comes while the batch waits.
WAIT_FOR_FEED_SECONDS = 5.0
fed_more = threading.Condition()


class CountingChunker:
    """The native stream chunker, counting the windows fed to it."""

    fed = 0

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
        with fed_more:
            CountingChunker.fed += 1
            fed_more.notify_all()
        return self._inner.feed(data)

    def finish(self) -> ChunkList:
        return self._inner.finish()


def _fed(want: int) -> Callable[[], bool]:
    return lambda: CountingChunker.fed >= want


async def test_the_next_window_is_cut_before_a_batch_is_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(windows, "StreamChunker", CountingChunker)
    CountingChunker.fed = 0
    data = os.urandom(6 * WINDOW + 999)
    (tmp_path / "f").write_bytes(data)
    await asyncio.sleep(0.05)  # past the racy-clean window of the file's ctime
    origin = FsOrigin(tmp_path)
    [obj] = [o async for o in origin.list()]
    reader = await origin.open(obj)
    out = Chunked()
    # Windows fed to the chunker when each batch arrived (before placing it).
    fed_at: list[int] = []
    chunks = bytearray()
    try:
        async for batch in chunk_windows(reader, PARAMS, WINDOW, out, WindowPool()):
            # Blocks the loop on purpose: nothing else may feed meanwhile.
            with fed_more:
                k, last = len(fed_at), -(-len(data) // WINDOW)
                fed_more.wait_for(_fed(min(k + 2, last)), WAIT_FOR_FEED_SECONDS)
                fed_at.append(CountingChunker.fed)
            chunks += b"".join(bytes(batch.data(i)) for i in range(len(batch)))
            await asyncio.sleep(0)  # the placement's hops
    finally:
        await reader.close()
    print(f"windows fed when each batch arrived: {fed_at}")
    windows_read = -(-len(data) // WINDOW)
    assert len(fed_at) == windows_read + 1  # every window's batch, then the finish's
    # Batch k (of window k) arrives once window k+1 is fed, the last window's
    # once nothing is left to feed; the old loop had fed only k+1 windows.
    assert fed_at[:windows_read] == [min(k + 2, windows_read) for k in range(windows_read)]
    # The same chunks and digest as ever.
    assert bytes(chunks) == data
    assert out.size == len(data) and out.digest == blake3_digest(data)


class CountingReader:
    """An object reader that counts the windows read into."""

    def __init__(self, inner: ObjectReader) -> None:
        self._inner = inner
        self.reads = 0

    async def readinto(self, buf: memoryview) -> int:
        n = await self._inner.readinto(buf)
        self.reads += 1
        return n

    async def finish(self) -> None:
        await self._inner.finish()

    async def close(self) -> None:
        await self._inner.close()


async def test_a_slow_append_of_one_window_does_not_stop_the_next_reads(tmp_path: Path) -> None:
    """While batch k's spool appends still read its buffer, window k + 2 is
    read into the third buffer and batch k + 1 comes: with two buffers, k + 2
    could only be read into k's, so batch k + 1 waited for k's appends (the
    native threads idle meanwhile: docs/performance.md "win3")."""
    data = os.urandom(6 * WINDOW + 999)
    (tmp_path / "f").write_bytes(data)
    await asyncio.sleep(0.05)  # past the racy-clean window of the file's ctime
    origin = FsOrigin(tmp_path)
    [obj] = [o async for o in origin.list()]
    reader = CountingReader(await origin.open(obj))
    loop = asyncio.get_running_loop()
    out, chunks = Chunked(), bytearray()
    # An async generator, typed as an iterator (as ship.py closes it).
    batches = cast(
        AsyncGenerator[WindowChunks], chunk_windows(reader, PARAMS, WINDOW, out, WindowPool())
    )
    try:
        first = await anext(batches)
        chunks += b"".join(bytes(first.data(i)) for i in range(len(first)))
        slow: asyncio.Future[None] = loop.create_future()  # batch 0's append, not over
        first.busy.append(slow)
        second = await asyncio.wait_for(anext(batches), WAIT_FOR_FEED_SECONDS)
        # Windows 0, 1 and 2 were read while batch 0's append was under way.
        assert reader.reads == 3
        slow.set_result(None)
        chunks += b"".join(bytes(second.data(i)) for i in range(len(second)))
        async for batch in batches:
            chunks += b"".join(bytes(batch.data(i)) for i in range(len(batch)))
    finally:
        await batches.aclose()
        await reader.close()
    assert bytes(chunks) == data
    assert out.size == len(data) and out.digest == blake3_digest(data)
