"""Small objects in batches: many objects per thread hop, placed together.

Copied one at a time, a 1-16 KiB file cost about seven thread-pool hops
(open, two reads, chunk, stat, close, index-cache lookup), each far more
than the ~10 us of hashing it needs (docs/performance.md). Here an origin
that can (``read_many``: the filesystem origin) reads a whole batch of
small objects in one hop, the batch is chunked in one more (the GIL is
released while each object is hashed), and every peer's pack writer takes
the batch's chunks as one chunk batch: one lock, one index-cache lookup.

An object the origin cannot vouch for in a batch (it changed or vanished,
or its ctime is too recent to be sure) is answered None and goes the
ordinary way, one object at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from replicator._native import ChunkerParams, ChunkList, chunk_buffers
from replicator.chunking import DIGEST_SIZE
from replicator.origins import ObjectVersion
from replicator.pipeline.plan import PackWriter
from replicator.pipeline.ship import Shipped
from replicator.store.placed import Placed

#: Objects up to this size are read whole, in batches: the chunker's
#: default max size, so a batched object is one to a few chunks, and larger
#: ones keep the windowed path's bounded memory and overlap.
SMALL_OBJECT = 256 * 1024
#: A batch holds at most this many objects ...
BATCH_OBJECTS = 128
#: ... and this many bytes (the memory one batch in flight holds).
BATCH_BYTES = 8 * 1024 * 1024

T = TypeVar("T")


class BatchOrigin(Protocol):
    async def read_many(self, objs: Sequence[ObjectVersion]) -> list[bytes | None]: ...


def batch_origin(origin: object) -> BatchOrigin | None:
    """The origin when it reads small objects in batches, else None."""
    return origin if callable(getattr(origin, "read_many", None)) else None  # type: ignore[return-value]


class Batcher(Generic[T]):
    """Collects small objects into batches bounded in count and bytes."""

    def __init__(self, limit: int = BATCH_OBJECTS) -> None:
        self.limit = max(1, min(limit, BATCH_OBJECTS))
        self.items: list[T] = []
        self.size = 0

    def add(self, item: T, size: int) -> list[T] | None:
        """Add one object of ``size`` bytes; the full batch when it filled it."""
        self.items.append(item)
        self.size += size
        if len(self.items) >= self.limit or self.size >= BATCH_BYTES:
            return self.take()
        return None

    def take(self) -> list[T]:
        out, self.items, self.size = self.items, [], 0
        return out


class ManyChunks:
    """The chunks of several whole objects as one batch (``plan.ChunkBatch``)."""

    def __init__(self, datas: Sequence[bytes], lists: Sequence[ChunkList]) -> None:
        self._digests = b"".join(cl.digests for cl in lists)
        self._views: list[memoryview] = []
        #: Chunks per object, in order: how the placements are split again.
        self.counts: list[int] = []
        for data, cl in zip(datas, lists, strict=True):
            view = memoryview(data)
            if len(cl) == 1:  # most small objects: the one chunk is all of it
                self._views.append(view)
                self.counts.append(1)
                continue
            offsets = memoryview(cl.offsets).cast("Q")
            lengths = memoryview(cl.lengths).cast("I")
            self._views += [view[o : o + n] for o, n in zip(offsets, lengths, strict=True)]
            self.counts.append(len(lengths))

    def __len__(self) -> int:
        return len(self._views)

    def digest(self, i: int) -> bytes:
        return self._digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]

    def length(self, i: int) -> int:
        return len(self._views[i])

    def data(self, i: int) -> memoryview:
        return self._views[i]


def chunk_all(datas: Sequence[bytes], params: ChunkerParams) -> list[ChunkList]:
    """Chunk lists with whole-object digests (run in a thread: hashing
    releases the GIL, so the event loop keeps the other core). One native
    call for the batch: the GIL is let go once, not once per object (each
    release is a hand-off to a waiting thread and a wait to get it back)."""
    return chunk_buffers(list(datas), params)


class ShippedBatch:
    """Whole small objects chunked and placed together at each writer's peer.

    Kept as one batch to the commit (``lane_commits``): each live peer's
    placements are one :class:`Placed` for the whole batch, object ``k``
    being its chunks ``starts[k]`` to ``starts[k + 1]``, so no record,
    dict or task is made per object on the way to its manifest."""

    def __init__(self, datas: Sequence[bytes], lists: Sequence[ChunkList]) -> None:
        self.sizes = [len(d) for d in datas]
        #: Whole-object BLAKE3 of each object.
        self.digests = [cl.digest or b"" for cl in lists]
        #: Chunk digests of the whole batch, 32 bytes each, in order.
        self.chunk_digests = b"".join(cl.digests for cl in lists)
        self.starts = [0]
        for cl in lists:
            self.starts.append(self.starts[-1] + len(cl))
        #: Per live peer, every chunk's placement (objects in order).
        self.placements: dict[str, Placed] = {}
        #: Peers whose planning failed: every object of the batch failed there.
        self.failures: dict[str, Exception] = {}

    def __len__(self) -> int:
        return len(self.sizes)

    def shipped(self, k: int) -> Shipped:
        """Object ``k`` on its own, as the per-object path gives it."""
        lo, hi = self.starts[k], self.starts[k + 1]
        digests = bytearray(self.chunk_digests[lo * DIGEST_SIZE : hi * DIGEST_SIZE])
        out = Shipped(self.sizes[k], self.digests[k], digests, complete=True)
        out.failures = dict(self.failures)
        out.placements = {name: p.split([lo, hi - lo])[1] for name, p in self.placements.items()}
        return out


async def ship_many(
    datas: Sequence[bytes], params: ChunkerParams, writers: Sequence[PackWriter]
) -> ShippedBatch:
    """Chunk whole objects and place every chunk at every writer's peer."""
    lists = await asyncio.to_thread(chunk_all, datas, params)
    batch = ManyChunks(datas, lists)
    out = ShippedBatch(datas, lists)
    # Each peer has its own outcome: one whose planning fails drops out of
    # the batch (``failures``) and the others keep their copy.
    whole = {w.name: Placed() for w in writers}
    placed = await asyncio.gather(
        *(w.place_into(batch, whole[w.name]) for w in writers), return_exceptions=True
    )
    for w, p in zip(writers, placed, strict=True):
        if isinstance(p, BaseException):
            if not isinstance(p, Exception):
                raise p
            out.failures[w.name] = p
        else:
            # Spool appends may still read ``datas`` (they hold them): the
            # seal waits for them, and a failed one fails its pack there.
            out.placements[w.name] = whole[w.name]
    return out
