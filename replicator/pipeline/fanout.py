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
from replicator.pipeline.windows import Chunked, WindowChunks, chunk_windows
from replicator.store.placed import Placed


@dataclass
class FannedOut:
    size: int = 0
    complete: bool = False  # False when every lane dropped out before the end
    digest: bytes = b""  # whole-object BLAKE3
    digests: bytearray = field(default_factory=bytearray)  # 32 bytes per chunk
    placements: dict[str, Placed] = field(default_factory=dict)  # live lanes, compact
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
    out = FannedOut(placements={lane.name: Placed() for lane in lanes})
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
                *(
                    lane.pack_writer(large).place_into(batch, out.placements[lane.name])
                    for lane in live
                ),
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
                    batch.busy.extend(result)  # spool appends: see ship.py
            if not live:
                return out
            out.digests += batch.digests()
    out.size, out.digest, out.complete = chunked.size, chunked.digest, True
    return out


async def _place(
    lane: Lane, large: bool, batch: WindowChunks, placed: Placed
) -> list[asyncio.Future[None]]:
    return await lane.pack_writer(large).place_into(batch, placed)


def byte_counts(placed: Placed) -> tuple[int, int]:
    """(shipped, deduplicated) object bytes of one version at one peer."""
    shipped = placed.shipped_bytes()
    return shipped, placed.total_bytes() - shipped
