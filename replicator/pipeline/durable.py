"""Chunks durable, then the manifest: the one place that decides when open
packs seal for the manifests waiting on them.

A manifest names only durable packs (invariant 1). The pack writer
(``pipeline/plan.py``) resolves each open pack's future once the pack and
its index are written: that is the *chunks durable* signal, and the commit
step of an object only waits for it (:meth:`SealBudget.wait`, then the
manifest, then the event is durable at that peer and the source moves its
watermark). It never seals anything itself. Besides the writer's own seal
on size, the budget seals:

- **on time** (``max_delay``, ``store.max_pack_delay`` in the daemon): an
  open pack seals once its first waiter has waited that long, so a small
  change is durable within about that delay, not when 16 MiB has gathered.
  A waiter that gives its change's event time (``since_ns``) counts the
  delay from that event instead: a change that already spent the delay
  queued behind a burst or being read seals its pack at once (its peer's
  RPO is past the budget; the next pack gathers what is placed while this
  one is written), and one that comes in time changes nothing;
- **on count** (``limit``): once ``limit`` objects wait, every open pack of
  the budget's writers seals, so waiting memory stays bounded and a caller
  holding at most ``limit`` waiters can never deadlock (nothing else would
  fill the packs).

Backfill holds one budget across all peers (an object waits on every peer
at once) and seals on count only (its packs fill); each daemon lane holds
its own, on time and on count.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Iterable, Sequence

from replicator.pipeline.plan import OpenPack, PackWriter, Placement
from replicator.store.index_cache import Location
from replicator.store.placed import Placed


async def resolve(placements: Sequence[Placement]) -> list[Location]:
    """Wait until every pack the placements name is durable; their locations."""
    names: dict[int, bytes] = {}
    for p in placements:
        if isinstance(p.pack, OpenPack) and id(p.pack) not in names:
            names[id(p.pack)] = await p.pack.name
    return [
        Location(
            names[id(p.pack)] if isinstance(p.pack, OpenPack) else p.pack,
            p.offset,
            p.length,
            p.stored_length,
            p.compression,
        )
        for p in placements
    ]


async def pack_names(placed: Placed) -> list[bytes]:
    """Wait until every pack ``placed`` names is durable; their names, in the
    order of ``placed.packs`` (compact placements: no record per chunk)."""
    return [p if isinstance(p, bytes) else await p.name for p in placed.packs]


def unsealed(placed: Placed) -> bool:
    """Whether some pack ``placed`` names is not durable (nor failed) yet."""
    return any(isinstance(p, OpenPack) and not p.name.done() for p in placed.packs)


class SealBudget:
    """When the open packs of some writers seal for the manifests waiting on them."""

    def __init__(
        self, writers: Sequence[PackWriter], limit: int, max_delay: float | None = None
    ) -> None:
        self.writers = list(writers)
        self.limit = limit
        self.max_delay = max_delay
        self.waiting = 0
        #: Open packs with a waiter, and the timer that seals each.
        self._timers: dict[OpenPack, asyncio.TimerHandle] = {}
        self._seals: set[asyncio.Task[None]] = set()

    async def wait(self, placements: Sequence[Sequence[Placement]]) -> list[list[Location]]:
        """``resolve`` for each peer's placements, counted against the budget."""
        async with self._counted([p.pack for each in placements for p in each]):
            return list(await asyncio.gather(*(resolve(p) for p in placements)))

    async def wait_placed(
        self, placed: Sequence[Placed], *, since_ns: int | None = None
    ) -> list[list[bytes]]:
        """``pack_names`` for each peer's compact placements, counted likewise;
        ``since_ns``: the change's event time (wall clock), where the seal
        delay counts from."""
        async with self._counted([p for each in placed for p in each.packs], since_ns):
            return list(await asyncio.gather(*(pack_names(p) for p in placed)))

    @contextlib.asynccontextmanager
    async def _counted(
        self, packs: Iterable[bytes | OpenPack], since_ns: int | None = None
    ) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            if self.waiting >= self.limit:
                await asyncio.gather(*(w.flush() for w in self.writers))
            elif self.max_delay is not None:
                self._arm(packs, self._delay(self.max_delay, since_ns))
            yield
        finally:
            self.waiting -= 1

    @staticmethod
    def _delay(max_delay: float, since_ns: int | None) -> float:
        """What is left of ``max_delay`` since the event (all of it when the
        event time is unknown, or ahead of this clock)."""
        if since_ns is None:
            return max_delay
        age = (time.time_ns() - since_ns) / 1e9
        return min(max_delay, max(0.0, max_delay - age))

    def _arm(self, packs: Iterable[bytes | OpenPack], delay: float) -> None:
        """Seal every open pack a waiter waits on within ``delay`` (an
        earlier deadline than the pack's timer replaces it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        for pack in packs:
            if not isinstance(pack, OpenPack) or pack.name.done():
                continue
            timer = self._timers.get(pack)
            if timer is not None:
                if timer.when() <= deadline:
                    continue
                timer.cancel()
            else:
                pack.name.add_done_callback(functools.partial(self._disarm, pack))
            self._timers[pack] = loop.call_at(deadline, self._on_time, pack)

    def _disarm(self, pack: OpenPack, _: object = None) -> None:
        timer = self._timers.pop(pack, None)
        if timer is not None:
            timer.cancel()

    def _on_time(self, pack: OpenPack) -> None:
        self._timers.pop(pack, None)
        for w in self.writers:
            if w.is_open(pack):
                task = asyncio.ensure_future(w.seal_if_open(pack))
                self._seals.add(task)
                task.add_done_callback(self._seals.discard)

    async def flush_all(self) -> None:
        """Seal every open pack. A failed seal is not raised here: it already
        failed the pack's future, so each manifest waiting on it reports it."""
        await asyncio.gather(*(w.flush() for w in self.writers), return_exceptions=True)

    def close(self) -> None:
        """Stop the timers (the owner is stopping; flushes are its business)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._seals:
            task.cancel()
