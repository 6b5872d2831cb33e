"""Fan-out: read one object version once, place its chunks at several lanes.

Like :func:`replicator.pipeline.ship.ship`, but a lane whose writer fails
(its peer is down) drops out of this object and the others go on: one
peer's failure never costs another peer its copy. The window buffer is
reused only after every live lane took what it needed, so memory per object
in flight stays one window (plus the carry).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import cast

from replicator._native import ChunkerParams
from replicator.origins import ObjectReader
from replicator.pipeline.lanes import Lane
from replicator.pipeline.plan import Placement
from replicator.pipeline.windows import Chunked, WindowChunks, chunk_windows


@dataclass
class FannedOut:
    size: int = 0
    complete: bool = False  # False when every lane dropped out before the end
    digest: bytes = b""  # whole-object BLAKE3
    digests: bytearray = field(default_factory=bytearray)  # 32 bytes per chunk
    placements: dict[str, list[Placement]] = field(default_factory=dict)  # live lanes
    failures: dict[str, BaseException] = field(default_factory=dict)  # lanes that dropped out


async def fan_out(
    reader: ObjectReader,
    params: ChunkerParams,
    window_size: int,
    lanes: Sequence[Lane],
    *,
    large: bool = False,
) -> FannedOut:
    """Every lane's placements of the object's chunks, by the lane's writer
    of the object's size class; a lane whose writer failed is in
    ``failures`` instead. Reading stops once no lane is left."""
    out = FannedOut(placements={lane.name: [] for lane in lanes})
    chunked = Chunked()
    live = list(lanes)
    # An async generator (typed as an iterator), closed however the loop
    # ends, so an abandoned read is cancelled at once.
    windows = cast(
        AsyncGenerator[WindowChunks], chunk_windows(reader, params, window_size, chunked)
    )
    async with contextlib.aclosing(windows):
        async for batch in windows:
            if not len(batch):
                continue
            placed = await asyncio.gather(
                *(lane.pack_writer(large).place(batch) for lane in live),
                return_exceptions=True,
            )
            for lane, result in zip(list(live), placed, strict=True):
                if isinstance(result, Exception):
                    out.failures[lane.name] = result
                    del out.placements[lane.name]
                    live.remove(lane)
                elif isinstance(result, BaseException):
                    raise result  # cancellation: not a lane's failure
                else:
                    out.placements[lane.name].extend(result)
            if not live:
                return out
            for i in range(len(batch)):
                out.digests += batch.digest(i)
    out.size, out.digest, out.complete = chunked.size, chunked.digest, True
    return out


def byte_counts(placements: Sequence[Placement]) -> tuple[int, int]:
    """(shipped, deduplicated) object bytes of one version at one peer."""
    shipped = sum(p.length for p in placements if p.new)
    return shipped, sum(p.length for p in placements) - shipped
