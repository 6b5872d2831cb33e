"""An object that fits in its read window (pipeline/windows.py): read once,
cut in one hop, one batch -- with the cut points and digest of the windowed
stream, so the daemon, backfill and every peer deduplicate alike."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from replicator._native import ChunkerParams, blake3_digest
from replicator.errors import SupersededError
from replicator.origins import ObjectReader
from replicator.origins.fs import FsOrigin
from replicator.pipeline.windows import Chunked, WindowChunks, WindowPool, chunk_windows

KIB = 1024
PARAMS = ChunkerParams(1024, 4096, 16384)


class Counting:
    """An origin reader that counts its reads."""

    def __init__(self, inner: ObjectReader) -> None:
        self.inner = inner
        self.reads = 0

    async def readinto(self, buf: memoryview) -> int:
        self.reads += 1
        return await self.inner.readinto(buf)

    async def finish(self) -> None:
        await self.inner.finish()

    async def close(self) -> None:
        await self.inner.close()


async def _chunk(path: Path, window: int) -> tuple[list[WindowChunks], Chunked, int]:
    origin = FsOrigin(path.parent)
    [obj] = [o async for o in origin.list() if o.key == path.name]
    reader = Counting(await origin.open(obj))
    out = Chunked()
    try:
        batches = [
            b async for b in chunk_windows(reader, PARAMS, window, out, WindowPool()) if len(b)
        ]
    finally:
        await reader.close()
    return batches, out, reader.reads


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


@pytest.mark.parametrize("size", [1, 5 * KIB, 300 * KIB + 7])
async def test_a_small_object_is_read_once_into_one_batch(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    await asyncio.sleep(0.05)  # past the racy-clean window of the file's ctime
    whole, out, reads = await _chunk(tmp_path / "f", -(-(size + 1) // (64 * KIB)) * 64 * KIB)
    streamed, out2, reads2 = await _chunk(tmp_path / "f", 64 * KIB)
    print(
        f"{size} B: {reads} read, {len(whole)} batch in one window; {reads2} reads, "
        f"{len(streamed)} batches in 64 KiB windows"
    )
    assert reads == 1 and len(whole) == 1
    assert out.size == out2.size == size
    assert out.digest == out2.digest == blake3_digest(data)
    assert whole[0].digests() == b"".join(b.digests() for b in streamed)
    rebuilt = b"".join(bytes(whole[0].data(i)) for i in range(len(whole[0])))
    assert rebuilt == data


async def test_a_file_changed_before_the_one_read_ends_is_superseded(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(10 * KIB))
    await asyncio.sleep(0.05)
    origin = FsOrigin(tmp_path)
    [obj] = [o async for o in origin.list()]
    reader = await origin.open(obj)
    _append(tmp_path / "f", b"more")  # a write after the version was listed
    try:
        with pytest.raises(SupersededError):
            async for _ in chunk_windows(reader, PARAMS, 64 * KIB, Chunked(), WindowPool()):
                pass
    finally:
        await reader.close()
