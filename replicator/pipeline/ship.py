"""Ship one object: read it once, and give each peer the chunks it lacks.

Each window's chunk batch goes to every target peer's pack writer at once;
the window buffer is reused only after all of them took what they needed,
so memory per object in flight is one window (plus the carry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from replicator._native import ChunkerParams
from replicator.origins import ObjectReader
from replicator.pipeline.plan import PackWriter, Placement
from replicator.pipeline.windows import Chunked, chunk_windows


@dataclass
class Shipped:
    size: int
    digest: bytes  # whole-object BLAKE3
    digests: bytearray = field(default_factory=bytearray)  # 32 bytes per chunk, in order
    placements: dict[str, list[Placement]] = field(default_factory=dict)  # per peer name


async def ship(
    reader: ObjectReader,
    params: ChunkerParams,
    window_size: int,
    writers: Sequence[PackWriter],
) -> Shipped:
    """Chunk the object and place every chunk at every writer's peer."""
    out = Chunked()
    digests = bytearray()
    placements: dict[str, list[Placement]] = {w.name: [] for w in writers}
    async for batch in chunk_windows(reader, params, window_size, out):
        if not len(batch):
            continue
        placed = await asyncio.gather(*(w.place(batch) for w in writers))
        for w, p in zip(writers, placed, strict=True):
            placements[w.name].extend(p)
        for i in range(len(batch)):
            digests += batch.digest(i)
    return Shipped(out.size, out.digest, digests, placements)
