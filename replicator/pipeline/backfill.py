"""Backfill: replicate the current state of a source listing to every peer.

Each listed object is checked against every peer (``holds_version``), read
once if any peer lacks it, and its chunks go to those peers' pack writers.
Its manifests are written by a separate commit task once the packs they
name are durable, so a reader slot is never held waiting for a pack to
fill. Keys a peer holds but the source no longer lists get a tombstone,
behind the mass-deletion guard (``removals``).

Memory: ``store.concurrency`` windows in flight, one open pack per peer,
and at most ``WAITING_MANIFESTS`` objects waiting for their packs. The
listing is spilled to a temporary file as it streams by, and the removal
pass merges it with each peer's manifests as sorted streams: nothing grows
with the object count.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from replicator._native import ChunkerParams
from replicator.config import Settings, Store
from replicator.errors import (
    IntegrityError,
    NotFoundError,
    ReplicatorError,
    StoreError,
    SupersededError,
)
from replicator.origins import ObjectVersion, Origin, make_origin
from replicator.pipeline.commit import ManifestCommits, placed_manifest
from replicator.pipeline.compare import Spill, version_from_json, version_to_json
from replicator.pipeline.counting import CountingBackend
from replicator.pipeline.reconcile import Held, held_many, identity_of
from replicator.pipeline.removals import RemovalPlan, apply_removals, plan_removals, removal_refusal
from replicator.pipeline.ship import Shipped, ship
from replicator.pipeline.summary import BackfillSummary, NoProgress, Progress
from replicator.store.format import SourceIdentity
from replicator.store.index_cache import IndexCache, cache_path
from replicator.store.packs import PackWriter, SealBudget, pack_names
from replicator.store.peer import Peer, opened_peers

#: Objects read but waiting for their packs to seal (across all peers);
#: reaching it seals every open pack. Bounds memory and pack latency.
WAITING_MANIFESTS = 256
#: Reads of one key before a file that changes on every read is reported
#: (exit 1) instead of retried forever.
SUPERSEDED_TRIES = 3
#: The smallest read window (a small object gets one just above its size).
SMALL_WINDOW = 64 * 1024
#: Listed objects checked against the peers' manifests together (one batched
#: read per peer): an unchanged re-run is mostly this check.
HELD_BATCH = 256

#: The live peers lacking an object, and the observation number its manifest takes.
Lacking = tuple[list["_Target"], int]
#: Objects handed to the workers (with what the peers lack, when known).
Work = asyncio.Queue[tuple[ObjectVersion, Lacking | None] | None]


@dataclass
class _Target:
    """One peer during a run."""

    peer: Peer
    backend: CountingBackend
    cache: IndexCache
    writer: PackWriter
    manifests: ManifestCommits
    #: Why the peer was marked down (its retries were spent), or None.
    down: str | None = None


def peer_failure(exc: BaseException) -> bool:
    """An error that says the peer itself is failing (its retries are spent,
    access denied, I/O error), not that one stored object is bad."""
    return isinstance(exc, StoreError | OSError) and not isinstance(
        exc, IntegrityError | NotFoundError
    )


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
        allow_deletes: bool = False,
    ) -> None:
        self.origin = origin
        self.peers = peers
        self.params = params
        self.store = store
        self.progress = progress or NoProgress()
        self.summary = BackfillSummary()
        self.targets: list[_Target] = []
        self.allow_deletes = allow_deletes
        self._listing: Spill[ObjectVersion] | None = None
        self._commits: set[asyncio.Task[None]] = set()
        self.waiting_manifests = waiting_manifests
        self._slots = asyncio.Semaphore(waiting_manifests)
        self._budget = SealBudget([], waiting_manifests)

    async def run(self, prefix: str = "") -> BackfillSummary:
        started = time.monotonic()
        self.targets = list(await asyncio.gather(*(self._target(p) for p in self.peers)))
        self._budget = SealBudget([t.writer for t in self.targets], self.waiting_manifests)
        fd, spill = tempfile.mkstemp(prefix="replicator-listing-")
        os.close(fd)
        self._listing = Spill(Path(spill), version_to_json, version_from_json)
        try:
            if await self._replicate_all(prefix):
                await self._reconcile(prefix)
        finally:
            self._listing.remove()
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
        return _Target(peer, backend, cache, writer, ManifestCommits(backend))

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
        queue: Work = asyncio.Queue(self.store.concurrency)
        batch: list[ObjectVersion] = []
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.store.concurrency)]
        listed = True
        try:
            async for obj in self.origin.list(prefix):
                if not self._live():
                    self.summary.error("every destination is down: stopped reading the source")
                    listed = False
                    break
                assert self._listing is not None
                self._listing.add(obj)
                self.summary.objects += 1
                self.progress.listed(1, obj.size)
                batch.append(obj)
                if len(batch) >= HELD_BATCH:
                    await self._dispatch(batch, queue)
                    batch = []
            await self._dispatch(batch, queue)
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
        for where, reason in self.origin.unlisted:
            self.summary.error(
                f"source directory {where!r} cannot be read ({reason}): nothing under it "
                "was replicated, and nothing under it is taken as removed"
            )
        return listed

    async def _dispatch(self, batch: list[ObjectVersion], queue: Work) -> None:
        """Check a batch against every peer at once; only what some peer
        lacks goes to the workers (an unchanged object is never read)."""
        try:
            lacking: list[Lacking | None] = list(await self._held_batch(batch))
        except Exception:  # e.g. one unreadable manifest: each object checked alone
            lacking = [None] * len(batch)
        for obj, lacks in zip(batch, lacking, strict=True):
            if lacks is None or lacks[0]:
                await queue.put((obj, lacks))
            else:
                self.summary.unchanged_bytes += obj.size
                self._done("unchanged", obj.size)

    async def _worker(self, queue: Work) -> None:
        while (item := await queue.get()) is not None:
            obj, lacking = item
            try:
                outcome = await self._attempts(obj, lacking)
            except Exception as exc:  # one bad object must not stop the others
                self.summary.error(f"{obj.key!r}: {type(exc).__name__}: {exc}")
                outcome = "error"
            if outcome is not None:
                self._done(outcome, obj.size)

    async def _attempts(self, obj: ObjectVersion, lacking: Lacking | None) -> str | None:
        """Replicate ``obj``; when it changed before or while it was read,
        its current version, up to SUPERSEDED_TRIES reads in all."""
        for _ in range(SUPERSEDED_TRIES):
            try:
                return await self._object(obj, lacking)
            except SupersededError:
                lacking = None  # a newer version: checked at the peers again
                newer = await self.origin.refresh(obj)
                if newer is None:
                    return "superseded"  # gone: the next run records the removal
                obj = newer
        self.summary.error(
            f"{obj.key!r}: changed on each of {SUPERSEDED_TRIES} reads (written "
            "continuously?): not replicated this run"
        )
        return "error"

    def _done(self, outcome: str, size: int) -> None:
        if outcome != "error":
            self.summary.count(outcome)
        self.progress.done(outcome, size)

    def _live(self) -> list[_Target]:
        return [t for t in self.targets if t.down is None]

    def _mark_down(self, target: _Target, exc: BaseException) -> None:
        """Stop sending to a peer whose retries are spent; the others go on.

        Nothing more is packed for it, so a dead peer costs at most the one
        open pack it already had. That pack stays in the seal budget: sealing
        it (and failing) is what releases the manifests waiting on it."""
        self.summary.bump(self.summary.not_sent, target.peer.name)
        if target.down is not None:
            return
        target.down = f"{type(exc).__name__}: {exc}"
        self.summary.down[target.peer.name] = target.down
        self.summary.error(
            f"destination {target.peer.name!r} is down, nothing more is sent to it "
            f"this run: {target.down}"
        )

    async def _held_batch(self, objs: list[ObjectVersion]) -> list[Lacking]:
        """For each object, the live peers lacking it and the observation
        number its manifest takes (one name at every peer: after each one's
        manifests at that event time)."""
        if not objs:
            return []
        live = self._live()
        for t in self.targets:
            if t.down is not None:
                self.summary.bump(self.summary.not_sent, t.peer.name, len(objs))
        held = await asyncio.gather(
            *(held_many(t.backend, self.origin, objs) for t in live), return_exceptions=True
        )
        out: list[Lacking] = [([], 0) for _ in objs]
        for t, h in zip(live, held, strict=True):
            if isinstance(h, BaseException):
                if not peer_failure(h):
                    raise h
                for _ in objs:
                    self._mark_down(t, h)
                continue
            for i, one in enumerate(h):
                _lacks(out, i, t, one)
        return out

    async def _object(self, obj: ObjectVersion, lacking: Lacking | None) -> str | None:
        """Outcome, or None when a commit task will report it."""
        targets, observed = lacking or (await self._held_batch([obj]))[0]
        if not targets:
            self.summary.unchanged_bytes += obj.size
            return "unchanged"
        reader = await self.origin.open(obj)
        try:
            # A window sized to the object: two zeroed 8 MiB windows cost ~20 ms,
            # far more than a small file's whole copy (docs/performance.md).
            window = min(self.origin.window_size, max(obj.size + 1, SMALL_WINDOW))
            shipped = await ship(reader, self.params, window, [t.writer for t in targets])
        finally:
            await reader.close()
        self.summary.source_bytes += shipped.size
        etag = shipped.digest.hex() if self.origin.etag_is_digest else obj.etag
        # Hand over to a commit task: this reader slot moves on to the next
        # object while the manifest waits for its packs to be sealed.
        await self._slots.acquire()
        task = asyncio.create_task(
            self._commit(identity_of(self.origin, obj, etag, observed), shipped, targets)
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
            try:
                names: list[Any] = list(await self._budget.wait_placed(places))
            except Exception:  # find out which peer's pack failed
                names = await asyncio.gather(
                    *(pack_names(p) for p in places), return_exceptions=True
                )
            done = await asyncio.gather(
                *(
                    self._manifest_at(t, ident, shipped, packs)
                    for t, packs in zip(targets, names, strict=True)
                )
            )
            outcome = "replicated" if any(done) else "error"
        except Exception as exc:  # reported per object; the run goes on
            self.summary.error(f"{ident.key!r}: {type(exc).__name__}: {exc}")
            outcome = "error"
        finally:
            self._slots.release()
        self._done(outcome, ident.size)

    async def _manifest_at(
        self, t: _Target, ident: SourceIdentity, shipped: Shipped, packs: Any
    ) -> bool:
        """Write the manifest at one peer; False when that peer failed."""
        try:
            if isinstance(packs, BaseException):
                raise packs
            placed = shipped.placements[t.peer.name]
            m = placed_manifest(
                ident, shipped.digest, self.params, shipped.digests, placed=placed, names=packs
            )
            written = await t.manifests.put(m)
        except Exception as exc:
            if not peer_failure(exc):
                raise
            self._mark_down(t, exc)
            return False
        self.summary.bump(self.summary.manifests, t.peer.name, int(written))
        return True

    # ------------------------------------------------------------ removals

    async def _reconcile(self, prefix: str) -> None:
        """Plan the removals at every peer, then apply those the guard allows."""
        assert self._listing is not None
        key_prefix = self.origin.key_prefix(prefix)
        live = self._live()
        results = await asyncio.gather(
            *(
                plan_removals(
                    t.backend,
                    t.peer.name,
                    self._listing.replay(),
                    self.origin.bucket,
                    key_prefix,
                    unlisted=[where for where, _ in self.origin.unlisted],
                )
                for t in live
            ),
            return_exceptions=True,
        )
        for t, plan in zip(live, results, strict=True):
            if isinstance(plan, RemovalPlan):
                await self._apply(t, plan)
            elif isinstance(plan, ReplicatorError | OSError):
                self.summary.error(f"destination {t.peer.name!r}: removal pass failed: {plan}")
            else:
                raise plan

    async def _apply(self, target: _Target, plan: RemovalPlan) -> None:
        name = target.peer.name
        refusal = removal_refusal(plan, self.store.max_delete_fraction, allow=self.allow_deletes)
        if refusal is not None:
            self.summary.refused_removals[name] = plan.count
            self.summary.error(refusal)
            plan.discard()
            return
        o = self.origin
        written = await apply_removals(
            target.backend, plan, source_id=o.source_id, bucket=o.bucket, params=self.params
        )
        self.summary.removed += written
        self.summary.bump(self.summary.manifests, name, written)


def _lacks(out: list[Lacking], i: int, t: _Target, held: Held) -> None:
    if not held.held:
        out[i][0].append(t)
        out[i] = (out[i][0], max(out[i][1], held.observed))


async def run_backfill(
    settings: Settings,
    prefix: str = "",
    progress: Progress | None = None,
    *,
    allow_deletes: bool = False,
) -> BackfillSummary:
    """Check the source, open every peer (creating stores), backfill, close.

    A missing or unreadable source raises SourceUnavailableError (exit 2)
    before any peer is opened, so nothing is written."""
    origin = make_origin(settings)
    try:
        await origin.check()
        async with opened_peers(settings, create=True) as peers:
            job = Backfill(
                origin,
                peers,
                settings.chunking.params(),
                settings.store,
                progress,
                allow_deletes=allow_deletes,
            )
            return await job.run(prefix)
    finally:
        await origin.close()
