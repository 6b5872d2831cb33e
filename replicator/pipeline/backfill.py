"""Backfill: replicate the current state of a source listing to every peer.

Each listed object is checked against every peer (``holds_version``), read
once if any peer lacks it, and its chunks go to those peers' pack writers.
Its manifests are written by a separate commit task once the packs they
name are durable, so a reader slot is never held waiting for a pack to
fill. Keys a peer holds but the source no longer lists get a tombstone.

Memory: ``store.concurrency`` windows in flight, one open pack per peer,
and at most ``WAITING_MANIFESTS`` objects waiting for their packs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

from replicator._native import ChunkerParams
from replicator.config import Settings, Store
from replicator.errors import ReplicatorError, SupersededError
from replicator.origins import ObjectVersion, Origin, make_origin
from replicator.pipeline.commit import object_manifest, put_manifest, tombstone
from replicator.pipeline.counting import CountingBackend
from replicator.pipeline.reconcile import holds_version, identity_of, keys_at_peer, read_manifest
from replicator.pipeline.ship import Shipped, ship
from replicator.pipeline.summary import BackfillSummary, NoProgress, Progress
from replicator.store.format import SourceIdentity
from replicator.store.index_cache import IndexCache, cache_path
from replicator.store.packs import PackWriter, SealBudget
from replicator.store.peer import Peer, opened_peers

#: Objects read but waiting for their packs to seal (across all peers);
#: reaching it seals every open pack. Bounds memory and pack latency.
WAITING_MANIFESTS = 256


@dataclass
class _Target:
    """One peer during a run."""

    peer: Peer
    backend: CountingBackend
    cache: IndexCache
    writer: PackWriter


class Backfill:
    def __init__(
        self,
        origin: Origin,
        peers: list[Peer],
        params: ChunkerParams,
        store: Store,
        progress: Progress | None = None,
        *,
        waiting_manifests: int = WAITING_MANIFESTS,
    ) -> None:
        self.origin = origin
        self.peers = peers
        self.params = params
        self.store = store
        self.progress = progress or NoProgress()
        self.summary = BackfillSummary()
        self.targets: list[_Target] = []
        self._seen: set[str] = set()
        self._commits: set[asyncio.Task[None]] = set()
        self.waiting_manifests = waiting_manifests
        self._slots = asyncio.Semaphore(waiting_manifests)
        self._budget = SealBudget([], waiting_manifests)

    async def run(self, prefix: str = "") -> BackfillSummary:
        started = time.monotonic()
        self.targets = list(await asyncio.gather(*(self._target(p) for p in self.peers)))
        self._budget = SealBudget([t.writer for t in self.targets], self.waiting_manifests)
        try:
            if await self._replicate_all(prefix):
                await asyncio.gather(*(self._tombstones(t, prefix) for t in self.targets))
        finally:
            await asyncio.gather(*(t.cache.close() for t in self.targets))
        self._totals(time.monotonic() - started)
        return self.summary

    async def _target(self, peer: Peer) -> _Target:
        backend = CountingBackend(peer.backend)
        path = cache_path(self.store.cache_dir, peer.identity)
        cache = IndexCache(path, peer.config.to_bytes())
        await cache.open()
        await cache.sync(backend)
        writer = PackWriter(peer.name, backend, cache, self.store.pack_size, self.store.compression)
        return _Target(peer, backend, cache, writer)

    def _totals(self, elapsed: float) -> None:
        s = self.summary
        for t in self.targets:
            name = t.peer.name
            s.shipped_bytes[name] = t.writer.stats.shipped_bytes
            s.deduplicated_bytes[name] = t.writer.stats.deduplicated_bytes
            s.stored_bytes[name] = t.writer.stats.stored_bytes
            s.packs[name] = t.writer.stats.packs
            s.put_requests[name] = t.backend.counts["put"]
            s.manifests.setdefault(name, 0)
            if t.peer.capabilities is not None:
                s.capabilities[name] = asdict(t.peer.capabilities)
        s.elapsed_seconds = elapsed

    # ------------------------------------------------------------ objects

    async def _replicate_all(self, prefix: str) -> bool:
        """Every listed object; False when the listing itself failed."""
        queue: asyncio.Queue[ObjectVersion | None] = asyncio.Queue(self.store.concurrency)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.store.concurrency)]
        listed = True
        try:
            async for obj in self.origin.list(prefix):
                self._seen.add(obj.key)
                self.summary.objects += 1
                self.progress.listed(1, obj.size)
                await queue.put(obj)
        except (ReplicatorError, OSError) as exc:
            # Without a whole listing, "absent" proves nothing: no tombstones.
            self.summary.error(f"listing the source failed: {exc}")
            listed = False
        finally:
            # Workers finish what they hold and stop, whatever ended the listing.
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        await self._budget.flush_all()
        await asyncio.gather(*self._commits)
        return listed

    async def _worker(self, queue: asyncio.Queue[ObjectVersion | None]) -> None:
        while (obj := await queue.get()) is not None:
            try:
                outcome = await self._object(obj)
            except SupersededError:
                outcome = "superseded"
            except Exception as exc:  # one bad object must not stop the others
                self.summary.error(f"{obj.key!r}: {type(exc).__name__}: {exc}")
                outcome = "error"
            if outcome is not None:
                self._done(outcome, obj.size)

    def _done(self, outcome: str, size: int) -> None:
        if outcome != "error":
            self.summary.count(outcome)
        self.progress.done(outcome, size)

    async def _object(self, obj: ObjectVersion) -> str | None:
        """Outcome, or None when a commit task will report it."""
        held = await asyncio.gather(
            *(holds_version(t.backend, self.origin, obj) for t in self.targets)
        )
        targets = [t for t, h in zip(self.targets, held, strict=True) if not h]
        if not targets:
            self.summary.unchanged_bytes += obj.size
            return "unchanged"
        reader = await self.origin.open(obj)
        try:
            window = self.origin.window_size
            shipped = await ship(reader, self.params, window, [t.writer for t in targets])
        finally:
            await reader.close()
        self.summary.source_bytes += shipped.size
        etag = shipped.digest.hex() if self.origin.etag_is_digest else obj.etag
        # Hand over to a commit task: this reader slot moves on to the next
        # object while the manifest waits for its packs to be sealed.
        await self._slots.acquire()
        task = asyncio.create_task(
            self._commit(identity_of(self.origin, obj, etag), shipped, targets)
        )
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        return None

    async def _commit(
        self, ident: SourceIdentity, shipped: Shipped, targets: list[_Target]
    ) -> None:
        outcome = "replicated"
        try:
            places = [shipped.placements[t.peer.name] for t in targets]
            locations = await self._budget.wait(places)
            manifests = [
                object_manifest(ident, shipped.digest, self.params, shipped.digests, locs)
                for locs in locations
            ]
            written = await asyncio.gather(
                *(put_manifest(t.backend, m) for t, m in zip(targets, manifests, strict=True))
            )
            for t, w in zip(targets, written, strict=True):
                self.summary.bump(self.summary.manifests, t.peer.name, int(w))
        except Exception as exc:  # reported per object; the run goes on
            self.summary.error(f"{ident.key!r}: {type(exc).__name__}: {exc}")
            outcome = "error"
        finally:
            self._slots.release()
        self._done(outcome, ident.size)

    # ------------------------------------------------------------ removals

    async def _tombstones(self, target: _Target, prefix: str) -> None:
        """A tombstone for each key the peer holds that the source no longer lists."""
        now = time.time_ns()
        key_prefix = self.origin.key_prefix(prefix)
        async for key, latest in keys_at_peer(target.backend, self.origin.bucket, key_prefix):
            if key in self._seen:
                continue
            newest = await read_manifest(target.backend, latest)
            if newest is None or newest.removed:
                continue  # already recorded as removed: a replay writes nothing
            # The removal must sort after the version it removes.
            when = max(now, newest.identity.event_time_ns + 1)
            ident = SourceIdentity(self.origin.source_id, self.origin.bucket, key, "", "", 0, when)
            if await put_manifest(target.backend, tombstone(ident, self.params)):
                self.summary.removed += 1
                self.summary.bump(self.summary.manifests, target.peer.name)


async def run_backfill(
    settings: Settings, prefix: str = "", progress: Progress | None = None
) -> BackfillSummary:
    """Open the origin and every peer (creating stores), backfill, close."""
    origin = make_origin(settings)
    try:
        async with opened_peers(settings, create=True) as peers:
            job = Backfill(origin, peers, settings.chunking.params(), settings.store, progress)
            return await job.run(prefix)
    finally:
        await origin.close()
