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

Size classes: a lane has two pack writers. Objects of at least
``service.large_object_size`` go to the *large* one, the rest to the
*small* one, each with its own lock, open pack and pack upload. A large
object fills and uploads a pack after another while it is read; with one
writer every small object placed meanwhile queued behind that lock and had
its chunks in those packs (measured: small p99 3.3 s with a 64 MiB object
every 10 s, against 0.8 s without). Manifests of both classes go through
one group commit per lane (:class:`ManifestCommits`): the manifests that
arrive while a batch is being made durable go together in the next one.

Policy: the daemon's lanes retry forever (:attr:`Policy.RETRY`); a run
with an end, such as backfill, takes a peer whose retries are spent down
for the rest of the run (:attr:`Policy.RUN`, ``tracking.py``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import ItemsView
from dataclasses import field
from enum import StrEnum

from replicator._native import ChunkerParams
from replicator.config import StoreSettings
from replicator.errors import IntegrityError, NotFoundError, StoreError
from replicator.events import ChangeEvent
from replicator.pipeline.durable import SealBudget, unsealed
from replicator.pipeline.identity import newest_manifest, removal_identity
from replicator.pipeline.manifests import ManifestCommits, tombstone
from replicator.pipeline.plan import PackWriter
from replicator.records import record
from replicator.store.index_cache import IndexCache, cache_path
from replicator.store.peer import Peer
from replicator.store.placed import Placed

#: First retry delay of a failing peer; doubles up to the configured cap.
BASE_BACKOFF_SECONDS = 0.5
#: Versions active at one lane (mostly commits waiting for their pack to
#: seal); reaching it seals the open pack at once. Bounds memory per lane.
MAX_ACTIVE = 256
#: Objects of at least this size are *large* (default of ``service.large_object_size``).
LARGE_OBJECT_SIZE = 4 * 1024 * 1024


class Policy(StrEnum):
    """What a lane does when its peer fails."""

    #: The daemon: back off, keep the version, retry forever.
    RETRY = "retry"
    #: A run with an end (backfill): a peer whose retries are spent is down
    #: for the run; the versions it wants finish FAILED there.
    RUN = "run"


def peer_failure(exc: BaseException) -> bool:
    """An error that says the peer itself is failing (its retries are spent,
    access denied, I/O error), not that one stored object is bad."""
    return isinstance(exc, StoreError | OSError) and not isinstance(
        exc, IntegrityError | NotFoundError
    )


@record
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


class Wants:
    """A lane's wanted versions (key -> newest version not started), kept
    apart per size class so a worker of one class finds its next job without
    walking past a backlog of the other. Within a class, insertion order is
    age; a key is in at most one class (its newest version's)."""

    def __init__(self, large_object_size: int) -> None:
        self.large_object_size = large_object_size
        self._small: dict[str, ChangeEvent] = {}
        self._large: dict[str, ChangeEvent] = {}

    def is_large(self, event: ChangeEvent) -> bool:
        return event.size >= self.large_object_size

    def items(self, large: bool) -> ItemsView[str, ChangeEvent]:
        return (self._large if large else self._small).items()

    def get(self, key: str) -> ChangeEvent | None:
        found = self._small.get(key)
        return found if found is not None else self._large.get(key)

    def __setitem__(self, key: str, event: ChangeEvent) -> None:
        large = self.is_large(event)
        (self._small if large else self._large).pop(key, None)
        # An existing key of the same class keeps its place in line.
        (self._large if large else self._small)[key] = event

    def __delitem__(self, key: str) -> None:
        if self._small.pop(key, None) is None:
            del self._large[key]

    def __contains__(self, key: object) -> bool:
        return key in self._small or key in self._large

    def __len__(self) -> int:
        return len(self._small) + len(self._large)

    def events(self) -> list[ChangeEvent]:
        """Every wanted version, small ones first."""
        return [*self._small.values(), *self._large.values()]


class Lane:
    """One peer's pending changes, writer and health."""

    def __init__(
        self,
        peer: Peer,
        writer: PackWriter,
        cache: IndexCache,
        *,
        max_pack_delay: float | None,
        retry_cap: float,
        large_writer: PackWriter | None = None,
        large_object_size: int = LARGE_OBJECT_SIZE,
        policy: Policy = Policy.RETRY,
    ) -> None:
        self.peer = peer
        self.policy = policy
        #: Why the lane is down for the run (``Policy.RUN`` only), or None.
        self.down: str | None = None
        self.name = peer.name
        self.backend = peer.backend
        self.writer = writer
        #: Packs of large objects (the small writer when not given).
        self.large_writer = large_writer or writer
        #: Group commit of this peer's manifests (objects and tombstones).
        self.manifests = ManifestCommits(peer.backend)
        self.cache = cache
        self.max_pack_delay = max_pack_delay
        #: key -> newest version not started here, per size class.
        self.want = Wants(large_object_size)
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
        self.seals = SealBudget(self.writers, MAX_ACTIVE, max_delay=max_pack_delay)

    def __repr__(self) -> str:
        return f"Lane({self.name!r})"

    @property
    def held(self) -> int:
        return len(self.want) + len(self.active)

    def available(self, now: float) -> bool:
        """May take new work: not down, not backing off, not too far behind."""
        return self.down is None and now >= self.retry_at and len(self.active) < self.max_active

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

    def cover(self, event: ChangeEvent) -> ChangeEvent | None:
        """Keep ``event``, superseded before it was durable here, pending (for
        the RPO) until a version at least as new is durable: until then the
        peer's copy is older than this change. Only the oldest such version
        per key is kept; returns the version no longer pending, if any."""
        held = self.covered.get(event.key)
        if held is not None and held.event_time_ns <= event.event_time_ns:
            return event
        self.covered[event.key] = event
        return held

    def pack_writer(self, large: bool) -> PackWriter:
        """The writer of an object's size class."""
        return self.large_writer if large else self.writer

    @property
    def writers(self) -> list[PackWriter]:
        if self.large_writer is self.writer:
            return [self.writer]
        return [self.writer, self.large_writer]

    async def flush(self) -> None:
        """Seal both writers' open packs and wait for their uploads."""
        await asyncio.gather(*(w.flush() for w in self.writers))

    async def resolve(
        self, placed: Placed, *, large: bool = False, since_ns: int | None = None
    ) -> list[bytes]:
        """Durable names of the packs ``placed`` names (``placed.packs``
        order), once its chunks are durable. The lane's seal budget seals a
        small object's open pack ``max_pack_delay`` after the change's event
        (``since_ns``; after the wait began when not given; others may fill
        it meanwhile) or once ``max_active`` commits wait. A large object's
        is sealed at once: it holds the object's tail, and waiting would
        only add the delay."""
        if large and unsealed(placed):
            await self.large_writer.flush()
        [names] = await self.seals.wait_placed([placed], since_ns=since_ns)
        return names

    async def tombstone(self, event: ChangeEvent, params: ChunkerParams) -> bool:
        """Record a removal, if the peer holds a live version of the key
        (a removal of a key it never had, or already removed, writes
        nothing); True when a tombstone was written."""
        newest = await newest_manifest(self.backend, event.bucket, event.key)
        if newest is None or newest.removed:
            return False
        # The removal must sort after the version it removes.
        when = max(event.event_time_ns, newest.identity.event_time_ns + 1)
        return await self.manifests.put(tombstone(removal_identity(event, when), params))

    async def close(self) -> None:
        self.seals.close()
        await self.cache.close()


async def open_lane(
    peer: Peer,
    store: StoreSettings,
    retry_cap: float,
    *,
    large_object_size: int = LARGE_OBJECT_SIZE,
    policy: Policy = Policy.RETRY,
) -> Lane:
    """A lane over an opened peer: its index cache synced with the peer."""
    cache = IndexCache(cache_path(store.cache_dir, peer.identity), peer.config.to_bytes())
    await cache.open()
    try:
        await cache.sync(peer.backend)
    except BaseException:
        await cache.close()
        raise

    def writer() -> PackWriter:
        return PackWriter(peer.name, peer.backend, cache, store.pack_size, store.compression)

    return Lane(
        peer,
        writer(),
        cache,
        max_pack_delay=store.max_pack_delay,
        retry_cap=retry_cap,
        large_writer=writer(),
        large_object_size=large_object_size,
        policy=policy,
    )
