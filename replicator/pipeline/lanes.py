"""Lanes: the daemon's separate progress per peer.

A *lane* is one peer seen by the running pipeline: its pack writer and
index cache, the changes it still *wants* (per key, only the newest version
not yet started: a newer one supersedes it), the ones it has *active*
(being shipped or committed), and its health. A lane whose writes fail
backs off (capped, jittered, doubling) and keeps what it wants, so a peer
that is down loses nothing and holds back no other lane: the scheduler
simply leaves it out until its retry time, and then reads the changes
again for it alone.

Packs seal on size (the writer) and on time (the lane's seal budget,
``pipeline/durable.py``): an open pack that a commit has waited on for
``store.max_pack_delay`` seals, so a small change is durable within about
that delay instead of when a pack has filled.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from replicator.config import StoreSettings
from replicator.events import ChangeEvent
from replicator.pipeline.durable import SealBudget
from replicator.pipeline.plan import PackWriter, Placement
from replicator.store.index_cache import IndexCache, Location, cache_path
from replicator.store.peer import Peer

#: First retry delay of a failing peer; doubles up to the configured cap.
BASE_BACKOFF_SECONDS = 0.5
#: Versions active at one lane (mostly commits waiting for their pack to
#: seal); reaching it seals the open pack at once. Bounds memory per lane.
MAX_ACTIVE = 256


@dataclass
class Backoff:
    """Capped, jittered exponential backoff (full jitter on the upper half)."""

    cap: float
    base: float = BASE_BACKOFF_SECONDS
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** min(self.failures - 1, 30))
        # Jitter keeps peers (and daemons) that failed together from retrying together.
        return float(ceiling * (0.5 + 0.5 * self.rng.random()))

    def reset(self) -> None:
        self.failures = 0


class Lane:
    """One peer's pending changes, writer and health."""

    def __init__(
        self,
        peer: Peer,
        writer: PackWriter,
        cache: IndexCache,
        *,
        max_pack_delay: float,
        retry_cap: float,
    ) -> None:
        self.peer = peer
        self.name = peer.name
        self.backend = peer.backend
        self.writer = writer
        self.cache = cache
        self.max_pack_delay = max_pack_delay
        #: key -> newest version not started here (insertion order = age).
        self.want: dict[str, ChangeEvent] = {}
        #: key -> version being shipped or committed here.
        self.active: dict[str, ChangeEvent] = {}
        #: key -> oldest version superseded before it was durable here: still
        #: pending for the RPO until a newer version of the key is durable.
        self.covered: dict[str, ChangeEvent] = {}
        self.backoff = Backoff(retry_cap)
        self.retry_at = 0.0  # monotonic; the lane takes no new work before it
        self.up = True
        self.max_active = MAX_ACTIVE
        #: When the open pack seals for the commits waiting on it.
        self.seals = SealBudget([writer], MAX_ACTIVE, max_delay=max_pack_delay)

    def __repr__(self) -> str:
        return f"Lane({self.name!r})"

    @property
    def held(self) -> int:
        return len(self.want) + len(self.active)

    def available(self, now: float) -> bool:
        """May take new work: not backing off, and not too far behind."""
        return now >= self.retry_at and len(self.active) < self.max_active

    def failed(self) -> float:
        """Record a failure; the delay before the lane takes work again.

        Failures while already backing off are one outage, not several: the
        commits waiting on one failed pack all fail together, and counting
        each would push the very next retry to the cap."""
        now = time.monotonic()
        if now < self.retry_at:
            return self.retry_at - now
        delay = self.backoff.next_delay()
        self.retry_at = now + delay
        self.up = False
        return delay

    def succeeded(self) -> bool:
        """Record a success; True when the lane was down until now."""
        was_down = not self.up
        self.backoff.reset()
        self.retry_at = 0.0
        self.up = True
        return was_down

    async def resolve(self, placements: Sequence[Placement]) -> list[Location]:
        """Durable locations of ``placements``, once their chunks are durable.
        The lane's seal budget seals the open pack when the wait has lasted
        ``max_pack_delay`` (time-based sealing) or ``max_active`` commits wait."""
        [locations] = await self.seals.wait([placements])
        return locations

    async def close(self) -> None:
        self.seals.close()
        await self.cache.close()


async def open_lane(peer: Peer, store: StoreSettings, retry_cap: float) -> Lane:
    """A lane over an opened peer: its index cache synced with the peer."""
    cache = IndexCache(cache_path(store.cache_dir, peer.identity), peer.config.to_bytes())
    await cache.open()
    try:
        await cache.sync(peer.backend)
    except BaseException:
        await cache.close()
        raise
    writer = PackWriter(peer.name, peer.backend, cache, store.pack_size, store.compression)
    return Lane(peer, writer, cache, max_pack_delay=store.max_pack_delay, retry_cap=retry_cap)
