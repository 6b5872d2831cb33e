"""Origin bytes -> chunk batches, one window at a time.

An object is read into two reusable window buffers in turn; the native
StreamChunker cuts it and returns the chunks completed so far. A chunk may
start in the previous window: only that unfinished *carry* (shorter than
the chunker's max size) is kept as a copy, and a spanning chunk's bytes
are joined only if a peer asks for them (i.e. the chunk is new there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from replicator._native import ChunkerParams, ChunkList, StreamChunker
from replicator.chunking import DIGEST_SIZE
from replicator.origins import ObjectReader
from replicator.store.spool import drained

#: Native threads per window: cuts and the whole-object BLAKE3 of one window
#: run on two cores, with results identical to one thread (measured on the
#: 2-core CI machine: 16 MiB feeds at 1.22 GB/s instead of 0.86 GB/s).
CHUNK_THREADS = min(2, os.cpu_count() or 1)


class WindowChunks:
    """Chunks completed by one window; implements packs.ChunkBatch."""

    def __init__(
        self, cl: ChunkList, window: memoryview, start: int, carry: bytes, carry_start: int
    ) -> None:
        self._digests = cl.digests
        self._offsets = memoryview(cl.offsets).cast("Q")
        self._lengths = memoryview(cl.lengths).cast("I")
        self._window = window  # object bytes [start, start + len(window))
        self._start = start
        self._carry = carry  # object bytes [carry_start, start)
        self._carry_start = carry_start
        #: Work still reading this window's buffer (spool appends): the
        #: buffer is refilled only once it is done.
        self.busy: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._lengths)

    def digest(self, i: int) -> bytes:
        return self._digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]

    def length(self, i: int) -> int:
        return int(self._lengths[i])

    def digests(self) -> bytes:
        """Every chunk's digest, 32 bytes each, in order."""
        return self._digests

    def end(self) -> int:
        """Object offset just past the last chunk (the start when empty)."""
        if not len(self):
            return -1
        return int(self._offsets[-1]) + int(self._lengths[-1])

    def data(self, i: int) -> memoryview:
        off, n = int(self._offsets[i]), int(self._lengths[i])
        rel = off - self._start
        if rel >= 0:
            return self._window[rel : rel + n]
        # The chunk began before this window: it starts in the carry, and may
        # end in it (after finish) or run on into the window.
        lo = off - self._carry_start
        head = self._carry[lo : lo + n]
        if len(head) == n:
            return memoryview(head)
        return memoryview(head + self._window[: n - len(head)])


@dataclass
class Chunked:
    """What chunking an object produced, beside the batches."""

    size: int = 0
    digest: bytes = b""


async def chunk_windows(
    reader: ObjectReader, params: ChunkerParams, window_size: int, out: Chunked
) -> AsyncIterator[WindowChunks]:
    """Batches of an object's chunks in order; ``out`` is filled at the end.

    Two window buffers take turns: the next window is read while the
    current one is chunked and its new chunks are copied into packs, so a
    slow origin (S3) and the CPU work overlap. Memory: two windows."""
    views = [memoryview(bytearray(window_size)) for _ in range(2)]
    chunker = StreamChunker(params, threads=CHUNK_THREADS)
    carry, carry_start, pos, turn = b"", 0, 0, 0
    busy: list[list[asyncio.Future[None]]] = [[], []]  # per buffer
    reading = asyncio.ensure_future(reader.readinto(views[0]))
    try:
        while n := await reading:
            window, mine = views[turn][:n], turn
            turn ^= 1
            await drained(busy[turn])  # the previous window's spool appends
            # The reader is sequential: the next read starts once this one is done.
            reading = asyncio.ensure_future(reader.readinto(views[turn]))
            cl = await asyncio.to_thread(chunker.feed, window)
            batch = WindowChunks(cl, window, pos, carry, carry_start)
            busy[mine] = batch.busy
            yield batch
            # Keep only the bytes after the last cut: the next chunk starts there.
            cut = batch.end() if len(batch) else carry_start
            carry = _tail(carry, carry_start, window, pos, cut)
            carry_start, pos = cut, pos + n
    finally:
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
    await reader.finish()
    last = chunker.finish()
    yield WindowChunks(last, memoryview(b""), pos, carry, carry_start)
    out.size = pos
    out.digest = last.digest or b""


def _tail(carry: bytes, carry_start: int, window: memoryview, start: int, cut: int) -> bytes:
    if cut >= start:
        return bytes(window[cut - start :])
    return carry[cut - carry_start :] + bytes(window)
