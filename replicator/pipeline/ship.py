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
from replicator.pipeline.windows import Chunked, chunk_windows
from replicator.store.packs import PackWriter
from replicator.store.placed import Placed


@dataclass
class Shipped:
    size: int
    digest: bytes  # whole-object BLAKE3
    digests: bytearray = field(default_factory=bytearray)  # 32 bytes per chunk, in order
    placements: dict[str, Placed] = field(default_factory=dict)  # per peer name


async def ship(
    reader: ObjectReader,
    params: ChunkerParams,
    window_size: int,
    writers: Sequence[PackWriter],
) -> Shipped:
    """Chunk the object and place every chunk at every writer's peer."""
    out = Chunked()
    digests = bytearray()
    placements = {w.name: Placed() for w in writers}
    async for batch in chunk_windows(reader, params, window_size, out):
        if not len(batch):
            continue
        drains = await asyncio.gather(*(w.place_into(batch, placements[w.name]) for w in writers))
        # Spool appends go on while the next window is chunked; its buffer
        # is refilled only once they are done (chunk_windows waits on them).
        batch.busy.extend(d for each in drains for d in each)
        digests += batch.digests()
    return Shipped(out.size, out.digest, digests, placements)
