"""Waiting for packs to be sealed: the durable names behind placements, and
the budget that bounds how many objects wait (moved out of store/packs.py,
which re-exports these names)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from replicator.store.index_cache import Location
from replicator.store.placed import Placed

if TYPE_CHECKING:
    from replicator.store.packs import PackWriter, Placement


async def resolve(placements: Sequence[Placement]) -> list[Location]:
    """Wait until every pack the placements name is durable; their locations."""
    names: dict[int, bytes] = {}
    for p in placements:
        if not isinstance(p.pack, bytes) and id(p.pack) not in names:
            names[id(p.pack)] = await p.pack.name
    return [
        Location(
            p.pack if isinstance(p.pack, bytes) else names[id(p.pack)],
            p.offset,
            p.length,
            p.stored_length,
            p.compression,
        )
        for p in placements
    ]


async def pack_names(placed: Placed) -> list[bytes]:
    """Wait until every pack ``placed`` names is durable; their names, in the
    order of ``placed.packs``."""
    return [p if isinstance(p, bytes) else await p.name for p in placed.packs]


class SealBudget:
    """Bounds the manifests waiting on open packs, across all peers.

    A manifest cannot be written until the packs it names are sealed; with
    small objects an open pack may take long to fill. When ``limit`` objects
    are waiting, every open pack is sealed, so waiting memory stays bounded
    and a caller holding at most ``limit`` waiters can never deadlock."""

    def __init__(self, writers: Sequence[PackWriter], limit: int) -> None:
        self.writers = list(writers)
        self.limit = limit
        self.waiting = 0

    async def wait(self, placements: Sequence[Sequence[Placement]]) -> list[list[Location]]:
        """``resolve`` for each peer's placements, counted against the budget."""
        async with self._counted():
            return list(await asyncio.gather(*(resolve(p) for p in placements)))

    async def wait_placed(self, placed: Sequence[Placed]) -> list[list[bytes]]:
        """``pack_names`` for each peer's compact placements, counted likewise."""
        async with self._counted():
            return list(await asyncio.gather(*(pack_names(p) for p in placed)))

    @contextlib.asynccontextmanager
    async def _counted(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            if self.waiting >= self.limit:
                await asyncio.gather(*(w.flush() for w in self.writers))
            yield
        finally:
            self.waiting -= 1

    async def flush_all(self) -> None:
        """Seal every open pack. A failed seal is not raised here: it already
        failed the pack's future, so each manifest waiting on it reports it."""
        await asyncio.gather(*(w.flush() for w in self.writers), return_exceptions=True)
