"""Backfill: replicate the current state of a source listing to every peer.

Each listed object is checked against every peer (``Targets.lacking``, one
batched manifest read per peer for a page of the listing), read once if
any peer lacks it (``ship.ship``, the same window loop as the daemon's
lanes; small files in batches, ``small.py``), and its chunks go to those
peers' pack writers. Its manifests are written by a commit task once the
packs they name are durable (``commits.py``), so a reader slot is never
held waiting for a pack to fill. A peer that was behind catches up after
the listing (``catchup.py``). Keys a peer holds but the source no longer
lists get a tombstone, behind the mass-deletion guard (``removals.py``).

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
from functools import partial
from pathlib import Path

from replicator._native import ChunkerParams
from replicator.config import Settings, StoreSettings
from replicator.errors import ReplicatorError, SupersededError
from replicator.origins import ObjectVersion, Origin, make_origin
from replicator.pipeline.catchup import CatchUp, Note
from replicator.pipeline.commits import Commits
from replicator.pipeline.commits import Placed as Read
from replicator.pipeline.compare import Spill, version_from_json, version_to_json
from replicator.pipeline.reconcile import identity_of
from replicator.pipeline.removals import removal_pass
from replicator.pipeline.ship import BEHIND_SECONDS, read_window, ship
from replicator.pipeline.small import SMALL_OBJECT, Batcher, batch_origin, ship_many
from replicator.pipeline.summary import BackfillSummary, Progress
from replicator.pipeline.targets import Lacking, Target, Targets, open_target
from replicator.store.format import manifest_prefix
from replicator.store.peer import Peer, opened_peers
from replicator.workers import WorkerPool, run_workers

#: Objects read but waiting for their packs to seal (across all peers);
#: reaching it seals every open pack. Bounds memory and pack latency.
WAITING_MANIFESTS = 256
#: Reads of one key before a file that changes on every read is reported
#: (exit 1) instead of retried forever.
SUPERSEDED_TRIES = 3
#: Listed objects checked against the peers' manifests together (one batched
#: read per peer): an unchanged re-run is mostly this check.
HELD_BATCH = 256

#: An object handed to the workers (with what the peers lack, when known).
Item = tuple[ObjectVersion, Lacking | None]
#: A small object read whole: the version, its observation number, its bytes.
Small = tuple[ObjectVersion, int, bytes]
#: Objects handed to the workers: one, or a batch of small ones (small.py).
Work = WorkerPool[Item | list[Item]]


class Backfill:
    def __init__(
        self,
        origin: Origin,
        peers: list[Peer],
        params: ChunkerParams,
        store: StoreSettings,
        progress: Progress | None = None,
        *,
        waiting_manifests: int = WAITING_MANIFESTS,
        allow_deletes: bool = False,
        behind_seconds: float = BEHIND_SECONDS,
    ) -> None:
        self.origin = origin
        #: A peer whose pack upload has been under way this long is left out
        #: of the objects read meanwhile, and catches up after the listing.
        self.behind_seconds = behind_seconds
        self.peers = peers
        self.params = params
        self.store = store
        self.targets = Targets(progress)
        self.summary = self.targets.summary
        self.allow_deletes = allow_deletes
        self._listing: Spill[ObjectVersion] | None = None
        self._commits = Commits(self.targets, params, waiting_manifests)
        #: Objects left for a peer that was behind, read again for it alone.
        self._catch_up = CatchUp()
        self._catching_up = False
        self._batches: Batcher[Item] | None = None
        if batch_origin(origin) is not None:
            # Half the waiting budget at most: a batch's objects wait for
            # their packs together, and the budget must still seal early.
            self._batches = Batcher(waiting_manifests // 2)

    async def run(self, prefix: str = "") -> BackfillSummary:
        started = time.monotonic()
        key_prefix = manifest_prefix(self.origin.bucket, self.origin.key_prefix(prefix))
        self.targets.all = list(
            await asyncio.gather(*(open_target(p, self.store, key_prefix) for p in self.peers))
        )
        self._commits.start()
        fd, spill = tempfile.mkstemp(prefix="replicator-listing-")
        os.close(fd)
        self._listing = listing = Spill(Path(spill), version_to_json, version_from_json)
        try:
            if await self._replicate_all(prefix):
                await removal_pass(
                    self.targets,
                    self.origin,
                    listing.replay,
                    prefix,
                    params=self.params,
                    max_fraction=self.store.max_delete_fraction,
                    allow=self.allow_deletes,
                )
        finally:
            listing.remove()
            self._catch_up.remove()
            await asyncio.gather(*(t.cache.close() for t in self.targets.all))
        self.targets.totals(time.monotonic() - started)
        return self.summary

    # ------------------------------------------------------------ listing

    async def _replicate_all(self, prefix: str) -> bool:
        """Every listed object; False when the listing itself failed."""
        n = self.store.concurrency
        listed = True
        # Workers finish what they hold and stop, whatever ended the listing.
        async with WorkerPool(self._work_on, n, queue_size=n) as pool:
            try:
                if not await self._list_into(prefix, pool):
                    self.summary.error("every destination is down: stopped reading the source")
                    listed = False
            except (ReplicatorError, OSError) as exc:
                # Without a whole listing, "absent" proves nothing: no tombstones.
                self.summary.error(f"listing the source failed: {exc}")
                listed = False
        # Peers left out of objects catch up now, each alone, while the
        # commits of the others still wait for their packs.
        await self._catch_up_all()
        for where, reason in self.origin.unlisted:
            self.summary.error(
                f"source directory {where!r} cannot be read ({reason}): nothing under it "
                "was replicated, and nothing under it is taken as removed"
            )
        return listed

    async def _list_into(self, prefix: str, pool: Work) -> bool:
        """Record the listing (for the removal pass) and dispatch it in
        batches; False when every peer went down before it ended."""
        batch: list[ObjectVersion] = []
        whole = True
        async for obj in self.origin.list(prefix):
            if not self.targets.live():
                whole = False
                break
            assert self._listing is not None
            self._listing.add(obj)
            self.summary.objects += 1
            self.targets.progress.listed(1, obj.size)
            batch.append(obj)
            if len(batch) >= HELD_BATCH:
                await self._dispatch(batch, pool)
                batch = []
        await self._dispatch(batch, pool)
        if self._batches is not None and self._batches.items:
            await pool.put(self._batches.take())
        return whole

    async def _dispatch(self, batch: list[ObjectVersion], pool: Work) -> None:
        """Check a batch against every peer at once; only what some peer
        lacks goes to the workers (an unchanged object is never read)."""
        try:
            lacking: list[Lacking | None] = list(await self.targets.lacking(self.origin, batch))
        except Exception:  # e.g. one unreadable manifest: each object checked alone
            lacking = [None] * len(batch)
        for obj, lacks in zip(batch, lacking, strict=True):
            if lacks is not None and not lacks[0]:
                self.summary.unchanged_bytes += obj.size
                self.targets.done("unchanged", obj.size)
            elif self._batches is not None and lacks is not None and obj.size <= SMALL_OBJECT:
                if (full := self._batches.add((obj, lacks), obj.size)) is not None:
                    await pool.put(full)
            else:
                await pool.put((obj, lacks))

    # ------------------------------------------------------------ objects

    async def _work_on(self, item: Item | list[Item]) -> None:
        if isinstance(item, list):
            await self._small(item)
        else:
            await self._one(*item)

    async def _one(self, obj: ObjectVersion, lacking: Lacking | None) -> None:
        try:
            outcome = await self._attempts(obj, lacking)
        except Exception as exc:  # one bad object must not stop the others
            self.summary.error(f"{obj.key!r}: {type(exc).__name__}: {exc}")
            outcome = "error"
        if outcome is not None:
            self.targets.done(outcome, obj.size)

    async def _attempts(
        self, obj: ObjectVersion, lacking: Lacking | None, *, report: bool = True
    ) -> str | None:
        """Replicate ``obj``; when it changed before or while it was read,
        its current version, up to SUPERSEDED_TRIES reads in all."""
        for _ in range(SUPERSEDED_TRIES):
            try:
                return await self._object(obj, lacking, report=report)
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

    async def _object(
        self, obj: ObjectVersion, lacking: Lacking | None, *, report: bool = True
    ) -> str | None:
        """Outcome, or None when a commit task will report it (or a catch-up)."""
        targets, observed = lacking or (await self.targets.lacking(self.origin, [obj]))[0]
        if not targets:
            self.summary.unchanged_bytes += obj.size
            return "unchanged"
        reader = await self.origin.open(obj)
        try:
            window = read_window(obj.size, self.origin.window_size)
            writers = [t.writer for t in targets]
            may_defer = not self._catching_up
            shipped = await ship(
                reader,
                self.params,
                window,
                writers,
                may_defer=may_defer,
                behind_seconds=self.behind_seconds,
            )
        finally:
            await reader.close()
        targets = self.targets.without_failed(targets, shipped)
        targets = self._leave_behind(obj, observed, targets, shipped.behind, report)
        if not targets:
            return None if shipped.behind else "error"  # failed peers are marked down
        self.summary.source_bytes += shipped.size
        etag = shipped.digest.hex() if self.origin.etag_is_digest else obj.etag
        # Hand over to a commit task: this reader slot moves on to the next
        # object while the manifest waits for its packs to be sealed.
        ident = identity_of(self.origin, obj, etag, observed)
        await self._commits.one((ident, shipped), targets, report=report)
        return None

    def _leave_behind(
        self,
        obj: ObjectVersion,
        observed: int,
        targets: list[Target],
        behind: list[str],
        report: bool,
    ) -> list[Target]:
        """Note the object for each peer left out for being behind; the rest."""
        for t in targets:
            if t.name in behind:
                # Reported here only if no other peer takes it now.
                last = report and len(targets) == len(behind)
                self._catch_up.add(t.name, obj, observed, last)
        return [t for t in targets if t.name not in behind]

    # ------------------------------------------------------------ catch-up

    async def _catch_up_all(self) -> None:
        """Each peer that was behind, alone: the objects it was left out of;
        then every open pack seals and every commit ends."""
        self._catching_up = True
        await asyncio.gather(*(self._finish_peer(t) for t in self.targets.all))
        await self._commits.finish()

    async def _finish_peer(self, target: Target) -> None:
        """A peer's catch-up, then its last open pack seals at once: a peer
        done early does not wait for the others' uploads to be durable."""
        if self._catch_up.count(target.name):
            handle = partial(self._catch_up_one, target)
            await run_workers(self._catch_up.replay(target.name), handle, self.store.concurrency)
        await target.writer.flush()

    async def _catch_up_one(self, target: Target, note: Note) -> None:
        obj, observed, report = note
        self.summary.bump(self.summary.caught_up, target.name)
        if target.down is not None:
            self.summary.bump(self.summary.not_sent, target.name)
            outcome: str | None = "error"
        else:
            try:
                outcome = await self._attempts(obj, ([target], observed), report=report)
            except Exception as exc:  # one bad object must not stop the others
                self.summary.error(f"{obj.key!r}: {type(exc).__name__}: {exc}")
                outcome = "error"
        if outcome is not None and report:
            self.targets.done(outcome, obj.size)

    # ------------------------------------------------------------ small objects

    async def _small(self, items: list[Item]) -> None:
        """A batch of small objects (small.py); those the origin cannot read
        in a batch go the ordinary way, one by one."""
        reader = batch_origin(self.origin)
        assert reader is not None
        try:
            datas: list[bytes | None] = await reader.read_many([o for o, _ in items])
        except Exception:  # e.g. the thread pool is gone: each object alone
            datas = [None] * len(items)
        groups: dict[tuple[int, ...], tuple[list[Target], list[Small]]] = {}
        for (obj, lacks), data in zip(items, datas, strict=True):
            if data is None or lacks is None:
                await self._one(obj, lacks)
                continue
            targets, observed = lacks
            groups.setdefault(tuple(map(id, targets)), (targets, []))[1].append(
                (obj, observed, data)
            )
        for targets, group in groups.values():
            await self._small_group(targets, group)

    async def _small_group(self, targets: list[Target], group: list[Small]) -> None:
        """Objects of a batch lacked by the same peers: shipped together."""
        try:
            shipped = await ship_many(
                [d for _, _, d in group], self.params, [t.writer for t in targets]
            )
            # The same peers failed for every object of the batch.
            targets = self.targets.without_failed(targets, shipped[0]) if shipped else targets
        except Exception as exc:  # as the per-object path: each object reports it
            for obj, _, _ in group:
                self.summary.error(f"{obj.key!r}: {type(exc).__name__}: {exc}")
                self.targets.done("error", obj.size)
            return
        done: list[Read] = []
        for (obj, observed, _), one in zip(group, shipped, strict=True):
            self.summary.source_bytes += one.size
            etag = one.digest.hex() if self.origin.etag_is_digest else obj.etag
            done.append((identity_of(self.origin, obj, etag, observed), one))
        await self._commits.many(done, targets)


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
