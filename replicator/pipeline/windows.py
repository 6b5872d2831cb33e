"""Origin bytes -> chunk batches, one window at a time.

An object is read into reusable window buffers in turn (three for an
object of more than one window, see ``WINDOWS_AHEAD``); the native
StreamChunker cuts it and returns the chunks completed so far. A chunk may
start in the previous window: only that unfinished *carry* (shorter than
the chunker's max size) is kept as a copy, and a spanning chunk's bytes
are joined only if a peer asks for them (i.e. the chunk is new there).

The window buffers come from a :class:`WindowPool` and go back to it once
the object is read and no spool append still reads them: a fresh buffer
is zero-filled and page-faulted in (8 MiB: 28-65 ms per changed file on
the shared 2-core machine, more than reading and chunking a small one).

A window is an anonymous memory map, not a ``bytearray``: it starts on a
page boundary, and the kernel copies a file into a page-aligned buffer
5-6x faster than into one 16 bytes past it (where glibc puts a large
``bytearray``'s bytes: measured 1.3-1.7 GB/s against 7-10 GB/s here, the
read of every changed byte); and its pages are zeroed by the kernel as the
first read touches them, in the reader's thread, instead of by a
``memset`` of the whole buffer on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from replicator._native import ChunkerParams, ChunkList, StreamChunker, chunk_buffer
from replicator.chunking import DIGEST_SIZE
from replicator.origins import ObjectReader
from replicator.records import record
from replicator.store.spool import drained

#: Native threads per window: every CPU this process may run on. A window is
#: cut in segments of at least 1 MiB on that many threads, and the
#: whole-object BLAKE3 beside them, with results identical to one thread
#: (native/src/fused.rs); the native pool has one worker per CPU whatever
#: the objects in flight ask for. (It was 2: measured on the 2-core CI
#: machine, 16 MiB feeds at 1.22 GB/s instead of 0.86 GB/s.)
CHUNK_THREADS = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
#: Window buffers of an object longer than one window, used in turn: while
#: window k is placed, k + 1 is cut and k + 2 read. With two, the read of
#: k + 2 had to wait until the spool appends of k's new chunks were over
#: (a pack's BLAKE3 and the write, 7-17 ms for a window of new chunks,
#: against 7 ms to cut one): the native threads sat idle for 27 % of the AI
#: update's run (docs/performance.md "win3"). One more window of memory.
WINDOWS_AHEAD = 3
#: Buffers of up to this size are pooled by power-of-two capacity (small
#: objects' windows vary with their size); larger ones by exact size (the
#: origin's window, the same for every large object).
POOL_CLASS_LIMIT = 1024 * 1024
#: Idle buffers the pool keeps: about the windows of the daemon's or a
#: backfill's objects in flight (more are dropped as they come back).
POOL_MAX_IDLE_BYTES = 64 * 1024 * 1024
#: The windows of an object longer than this are freed, not pooled: its
#: manifest (tens of bytes per chunk) is built while they would sit idle, so
#: keeping them raised the peak RSS of a 4 GiB object by ~16 MiB (measured:
#: docs/performance.md), and one zero-fill is little beside reading it.
POOL_OBJECT_LIMIT = 64 * 1024 * 1024
#: A pool not asked for a buffer this long lets its idle ones go, so an
#: idle daemon does not keep a busy minute's windows resident.
POOL_IDLE_SECONDS = 10.0

#: A read window's buffer (tests and callers may give plain bytearrays).
Buffer = bytearray | mmap.mmap
#: An earlier version's chunks: their lengths, and their digests end to end.
Previous = tuple[list[int], bytes]
#: An earlier version's 1 MiB block chaining values and its whole digest
#: (store/subtrees.py).
PreviousTree = tuple[bytes, bytes]


def new_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer of ``size`` bytes (zero pages, faulted in by
    their first write); unmapped once the last reference to it is gone."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class WindowPool:
    """Read-window buffers reused across objects (taken and given back on
    the event loop; a buffer is given back only when nothing reads it)."""

    def __init__(
        self, max_idle_bytes: int = POOL_MAX_IDLE_BYTES, idle_seconds: float = POOL_IDLE_SECONDS
    ) -> None:
        self.max_idle_bytes = max_idle_bytes
        self.idle_seconds = idle_seconds
        #: Fresh buffers made (each one zero-filled): a figure for tests and benches.
        self.allocated = 0
        self.idle_bytes = 0
        self._free: dict[int, list[Buffer]] = {}
        self._last_take = 0.0
        self._trim: asyncio.TimerHandle | None = None
        self._trim_loop: asyncio.AbstractEventLoop | None = None

    def take(self, size: int) -> Buffer:
        """A buffer of at least ``size`` bytes (its old contents are garbage)."""
        self._last_take = time.monotonic()
        cap = capacity(size)
        free = self._free.get(cap)
        if free:
            self.idle_bytes -= cap
            return free.pop()
        self.allocated += 1
        return new_buffer(cap)

    def give(self, buffers: Sequence[Buffer]) -> None:
        """Keep ``buffers`` for later objects, up to ``max_idle_bytes``."""
        for buf in buffers:
            if self.idle_bytes + len(buf) > self.max_idle_bytes:
                continue  # dropped: freed like an unpooled window
            self._free.setdefault(len(buf), []).append(buf)
            self.idle_bytes += len(buf)
        # A timer of a loop that has ended never fires: arm one on this loop.
        if self.idle_bytes and (self._trim is None or self._trim_loop is not _running_loop()):
            self._arm(self.idle_seconds)

    def give_after(self, buffers: Sequence[Buffer], busy: Sequence[asyncio.Future[None]]) -> None:
        """``give`` once every future in ``busy`` (appends still reading the
        buffers) is done, failed or cancelled; at once when none is left."""
        pending = [f for f in busy if not f.done()]
        if not pending:
            self.give(buffers)
            return
        gathered = asyncio.gather(*pending, return_exceptions=True)
        gathered.add_done_callback(lambda _: self.give(buffers))

    def clear(self) -> None:
        self._free.clear()
        self.idle_bytes = 0

    def _arm(self, delay: float) -> None:
        loop = _running_loop()
        if loop is not None:  # no running loop: nothing to time
            self._trim, self._trim_loop = loop.call_later(delay, self._on_timer), loop

    def _on_timer(self) -> None:
        self._trim = None
        left = self._last_take + self.idle_seconds - time.monotonic()
        if left > 0:
            self._arm(left)  # taken from meanwhile: idle counts from the last take
        else:
            self.clear()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def capacity(size: int) -> int:
    """The pooled capacity of a buffer of ``size`` bytes."""
    if size > POOL_CLASS_LIMIT:
        return size
    return max(4096, 1 << (size - 1).bit_length())


#: The process's pool (objects of one run share it).
WINDOWS = WindowPool()
#: A pool that keeps nothing given back (large objects' windows).
NO_POOL = WindowPool(max_idle_bytes=0)


class WindowChunks:
    """Chunks completed by one window; implements packs.ChunkBatch."""

    def __init__(
        self, cl: ChunkList, window: memoryview, start: int, carry: bytes, carry_start: int
    ) -> None:
        self._digests = cl.digests
        #: The whole object's BLAKE3 (only the object's last batch has it).
        self.whole_digest = cl.digest or b""
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


@record
class Chunked:
    """What chunking an object produced, beside the batches."""

    size: int = 0
    digest: bytes = b""
    #: The digest's 1 MiB block chaining values (store/subtrees.py).
    subtrees: bytes = b""


async def chunk_windows(
    reader: ObjectReader,
    params: ChunkerParams,
    window_size: int,
    out: Chunked,
    pool: WindowPool = WINDOWS,
    *,
    previous: Previous | None = None,
    previous_tree: PreviousTree | None = None,
) -> AsyncIterator[WindowChunks]:
    """Batches of an object's chunks in order; ``out`` is filled at the end.

    ``previous``: the chunk lengths and digests of an earlier version of the
    object (cut with ``params``): its unchanged runs are hashed, not cut
    (native/src/hints.rs; the chunks are the same as without).
    ``previous_tree``: that version's block chaining values and digest: its
    unchanged blocks are not hashed again for the whole digest (tree.rs).

    Window buffers take turns (``WINDOWS_AHEAD``): the next windows are
    read while the current one is chunked and its new chunks are copied
    into packs, so a slow origin (S3), the cut and the appends overlap.
    Memory: two windows, three for an object longer than one.

    The next window's cut starts before a batch is handed on, so the native
    threads cut while the caller places the batch (index look-ups, pack
    bookkeeping: Python work between two cuts, when they were idle), and
    while the batch's new chunks are appended to the pack spool (a window
    of new chunks takes about as long to write and hash as to cut); only
    the read into that batch's buffer waits for the appends, two windows
    later."""
    buffers = [pool.take(window_size) for _ in range(2)]
    views = [memoryview(b)[:window_size] for b in buffers]
    chunker = StreamChunker(
        params, threads=CHUNK_THREADS, previous=previous, previous_tree=previous_tree
    )
    carry, carry_start, pos, k = b"", 0, 0, 0
    busy: list[list[asyncio.Future[None]]] = [[] for _ in range(WINDOWS_AHEAD)]
    reading: asyncio.Future[int] = asyncio.ensure_future(reader.readinto(views[0]))
    cutting: asyncio.Future[ChunkList] | None = None
    try:
        n = await reading
        if n and n < window_size:
            # Short only at the end: the whole object is in this window.
            # One batch cut in one hop, no read of the end (see _whole).
            window = views[0][:n]
            batch = WindowChunks(await _whole(reader, window, params), window, 0, b"", 0)
            busy[0] = batch.busy
            yield batch
            out.size, out.digest = n, batch.whole_digest
            return
        if n:
            cutting = _cut(chunker, views[0][:n])
            reading = asyncio.ensure_future(reader.readinto(views[1]))
            # A third buffer only for an object of more than one window.
            buffers.append(pool.take(window_size))
            views.append(memoryview(buffers[-1])[:window_size])
        while n:
            mine = k % WINDOWS_AHEAD
            window = views[mine][:n]
            assert cutting is not None
            cl = await cutting
            # The next window is cut while this one's batch is placed: the
            # native threads are not idle during the placement's Python work.
            if m := await reading:
                cutting = _cut(chunker, views[(k + 1) % WINDOWS_AHEAD][:m])
                # The window after it is read now, into the buffer of the
                # window before this one, once that one's spool appends are
                # over (the reader is sequential: after window k + 1).
                after = (k + 2) % WINDOWS_AHEAD
                reading = asyncio.ensure_future(_refill(reader, views[after], busy[after]))
            batch = WindowChunks(cl, window, pos, carry, carry_start)
            busy[mine] = batch.busy
            yield batch
            # Keep only the bytes after the last cut: the next chunk starts there.
            cut = batch.end() if len(batch) else carry_start
            carry = _tail(carry, carry_start, window, pos, cut)
            carry_start, pos, n, k = cut, pos + n, m, k + 1
    finally:
        views.clear()
        if pos > POOL_OBJECT_LIMIT:
            pool = NO_POOL
        await _release(pool, buffers, [reading, cutting], [f for b in busy for f in b])
    await reader.finish()
    last = chunker.finish()
    yield WindowChunks(last, memoryview(b""), pos, carry, carry_start)
    out.size = pos
    out.digest = last.digest or b""
    out.subtrees = chunker.subtrees


def _cut(chunker: StreamChunker, window: memoryview) -> asyncio.Future[ChunkList]:
    """Cut ``window`` in a thread, submitted now (a task would start only at
    the loop's next turn, after the batch was handed on)."""
    return asyncio.get_running_loop().run_in_executor(None, chunker.feed, window)


async def _refill(reader: ObjectReader, view: memoryview, busy: list[asyncio.Future[None]]) -> int:
    await drained(busy)  # the buffer's previous window's spool appends
    return await reader.readinto(view)


async def _release(
    pool: WindowPool,
    buffers: list[Buffer],
    users: Sequence[asyncio.Future[Any] | None],
    busy: list[asyncio.Future[None]],
) -> None:
    """The windows go back to the pool once the appends reading them are
    over; not after a read or a cut was cancelled (``users``): its thread
    may still be using a buffer, which then must not serve another object."""
    started = [f for f in users if f is not None]
    if all(f.done() and not f.cancelled() for f in started):
        pool.give_after(buffers, busy)
        return
    for f in started:
        if not f.done():
            f.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await f


async def _whole(reader: ObjectReader, window: memoryview, params: ChunkerParams) -> ChunkList:
    """Every chunk of an object read whole into ``window`` (the cut points
    and digest of the stream chunker), once the reader confirms the version:
    half the thread hops and placements of a small object.
    The two overlap: a file read just after it was written waits out its
    racy-clean window (origins/fs.py) while it is cut."""
    cl, _ = await asyncio.gather(
        asyncio.to_thread(chunk_buffer, window, params, CHUNK_THREADS), reader.finish()
    )
    return cl


def _tail(carry: bytes, carry_start: int, window: memoryview, start: int, cut: int) -> bytes:
    if cut >= start:
        return bytes(window[cut - start :])
    return carry[cut - carry_start :] + bytes(window)
