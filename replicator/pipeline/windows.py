"""Origin bytes -> chunk batches, one window at a time.

An object is read into one reusable window buffer; the native
StreamChunker cuts it and returns the chunks completed so far. A chunk may
start in the previous window: only that unfinished *carry* (shorter than
the chunker's max size) is kept as a copy, and a spanning chunk's bytes
are joined only if a peer asks for them (i.e. the chunk is new there).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from replicator._native import ChunkerParams, ChunkList, StreamChunker
from replicator.chunking import DIGEST_SIZE
from replicator.origins import ObjectReader


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

    def __len__(self) -> int:
        return len(self._lengths)

    def digest(self, i: int) -> bytes:
        return self._digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]

    def length(self, i: int) -> int:
        return int(self._lengths[i])

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
    """Batches of an object's chunks in order; ``out`` is filled at the end."""
    buf = bytearray(window_size)
    view = memoryview(buf)
    chunker = StreamChunker(params)
    carry, carry_start, pos = b"", 0, 0
    while True:
        n = await reader.readinto(view)
        if n == 0:
            break
        window = view[:n]
        cl = await asyncio.to_thread(chunker.feed, window)
        batch = WindowChunks(cl, window, pos, carry, carry_start)
        yield batch
        # Keep only the bytes after the last cut: the next chunk starts there.
        cut = batch.end() if len(batch) else carry_start
        carry = _tail(carry, carry_start, window, pos, cut)
        carry_start, pos = cut, pos + n
    await reader.finish()
    last = chunker.finish()
    yield WindowChunks(last, memoryview(b""), pos, carry, carry_start)
    out.size = pos
    out.digest = last.digest or b""


def _tail(carry: bytes, carry_start: int, window: memoryview, start: int, cut: int) -> bytes:
    if cut >= start:
        return bytes(window[cut - start :])
    return carry[cut - carry_start :] + bytes(window)
