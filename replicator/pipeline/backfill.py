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
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from replicator._native import ChunkerParams
from replicator.config import Settings, StoreSettings
from replicator.errors import (
    IntegrityError,
    NotFoundError,
    ReplicatorError,
    StoreError,
    SupersededError,
)
from replicator.origins import ObjectVersion, Origin, make_origin
from replicator.pipeline.catchup import CatchUp, Note
from replicator.pipeline.compare import Spill, version_from_json, version_to_json
from replicator.pipeline.counting import CountingBackend
from replicator.pipeline.durable import SealBudget, pack_names
from replicator.pipeline.manifests import ManifestCommits
from replicator.pipeline.plan import PackWriter
from replicator.pipeline.reconcile import Held, held_many, identity_of
from replicator.pipeline.removals import RemovalPlan, apply_removals, plan_removals, removal_refusal
from replicator.pipeline.ship import BEHIND_SECONDS, Shipped, ship
from replicator.pipeline.small import SMALL_OBJECT, Batcher, batch_origin, ship_many
from replicator.pipeline.summary import BackfillSummary, NoProgress, Progress
from replicator.store.bulk import holds_any
from replicator.store.format import SourceIdentity, manifest_prefix
from replicator.store.index_cache import IndexCache, cache_path
from replicator.store.peer import Peer, opened_peers
from replicator.workers import WorkerPool, run_workers

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
#: An object handed to the workers (with what the peers lack, when known).
Item = tuple[ObjectVersion, Lacking | None]
#: A small object read whole: the version, its observation number, its bytes.
Small = tuple[ObjectVersion, int, bytes]
#: Objects handed to the workers: one, or a batch of small ones (small.py).
Work = WorkerPool[Item | list[Item]]


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
    #: Whether the peer held manifests under the run's prefix before it
    #: began; without any, there is nothing to tombstone (no removal pass).
    had_manifests: bool = True


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
        self.progress = progress or NoProgress()
        self.summary = BackfillSummary()
        self.targets: list[_Target] = []
        self.allow_deletes = allow_deletes
        self._listing: Spill[ObjectVersion] | None = None
        self._commits: set[asyncio.Task[None]] = set()
        self.waiting_manifests = waiting_manifests
        #: Objects waiting for their packs, and a signal each time some finish.
        self._waiting = 0
        self._freed = asyncio.Event()
        self._budget = SealBudget([], waiting_manifests)
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
        self.targets = list(
            await asyncio.gather(*(self._target(p, key_prefix) for p in self.peers))
        )
        self._budget = SealBudget([t.writer for t in self.targets], self.waiting_manifests)
        fd, spill = tempfile.mkstemp(prefix="replicator-listing-")
        os.close(fd)
        self._listing = Spill(Path(spill), version_to_json, version_from_json)
        try:
            if await self._replicate_all(prefix):
                await self._reconcile(prefix)
        finally:
            self._listing.remove()
            self._catch_up.remove()
            await asyncio.gather(*(t.cache.close() for t in self.targets))
        self._totals(time.monotonic() - started)
        return self.summary

    async def _target(self, peer: Peer, manifests: str) -> _Target:
        backend = CountingBackend(peer.backend)
        path = cache_path(self.store.cache_dir, peer.identity)
        cache = IndexCache(path, peer.config.to_bytes())
        await cache.open()
        await cache.sync(backend)
        writer = PackWriter(peer.name, backend, cache, self.store.pack_size, self.store.compression)
        had = await holds_any(backend, manifests)
        return _Target(peer, backend, cache, writer, ManifestCommits(backend), had_manifests=had)

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
            if not self._live():
                whole = False
                break
            assert self._listing is not None
            self._listing.add(obj)
            self.summary.objects += 1
            self.progress.listed(1, obj.size)
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
            lacking: list[Lacking | None] = list(await self._held_batch(batch))
        except Exception:  # e.g. one unreadable manifest: each object checked alone
            lacking = [None] * len(batch)
        for obj, lacks in zip(batch, lacking, strict=True):
            if lacks is not None and not lacks[0]:
                self.summary.unchanged_bytes += obj.size
                self._done("unchanged", obj.size)
            elif self._batches is not None and lacks is not None and obj.size <= SMALL_OBJECT:
                if (full := self._batches.add((obj, lacks), obj.size)) is not None:
                    await pool.put(full)
            else:
                await pool.put((obj, lacks))

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
            self._done(outcome, obj.size)

    async def _catch_up_all(self) -> None:
        """Each peer that was behind, alone: the objects it was left out of;
        then every open pack seals and every commit ends."""
        self._catching_up = True
        await asyncio.gather(*(self._finish_peer(t) for t in self.targets))
        await self._budget.flush_all()
        await asyncio.gather(*self._commits)

    async def _finish_peer(self, target: _Target) -> None:
        """A peer's catch-up, then its last open pack seals at once: a peer
        done early does not wait for the others' uploads to be durable."""
        name = target.peer.name
        if self._catch_up.count(name):
            handle = partial(self._catch_up_one, target)
            await run_workers(self._catch_up.replay(name), handle, self.store.concurrency)
        await target.writer.flush()

    async def _catch_up_one(self, target: _Target, note: Note) -> None:
        obj, observed, report = note
        self.summary.bump(self.summary.caught_up, target.peer.name)
        if target.down is not None:
            self.summary.bump(self.summary.not_sent, target.peer.name)
            outcome: str | None = "error"
        else:
            try:
                outcome = await self._attempts(obj, ([target], observed), report=report)
            except Exception as exc:  # one bad object must not stop the others
                self.summary.error(f"{obj.key!r}: {type(exc).__name__}: {exc}")
                outcome = "error"
        if outcome is not None and report:
            self._done(outcome, obj.size)

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

    async def _object(
        self, obj: ObjectVersion, lacking: Lacking | None, *, report: bool = True
    ) -> str | None:
        """Outcome, or None when a commit task will report it (or a catch-up)."""
        targets, observed = lacking or (await self._held_batch([obj]))[0]
        if not targets:
            self.summary.unchanged_bytes += obj.size
            return "unchanged"
        reader = await self.origin.open(obj)
        try:
            # A window sized to the object: two zeroed 8 MiB windows cost ~20 ms,
            # far more than a small file's whole copy (docs/performance.md).
            window = min(self.origin.window_size, max(obj.size + 1, SMALL_WINDOW))
            writers = [t.writer for t in targets]
            shipped = await ship(
                reader,
                self.params,
                window,
                writers,
                may_defer=not self._catching_up,
                behind_seconds=self.behind_seconds,
            )
        finally:
            await reader.close()
        targets = self._without_failed(targets, shipped)
        for t in targets:
            if t.peer.name in shipped.behind:
                # Reported here only if no other peer takes it now.
                last = report and len(targets) == len(shipped.behind)
                self._catch_up.add(t.peer.name, obj, observed, last)
        targets = [t for t in targets if t.peer.name not in shipped.behind]
        if not targets:
            return None if shipped.behind else "error"  # failed peers are marked down
        self.summary.source_bytes += shipped.size
        etag = shipped.digest.hex() if self.origin.etag_is_digest else obj.etag
        # Hand over to a commit task: this reader slot moves on to the next
        # object while the manifest waits for its packs to be sealed.
        await self._take_slots(1)
        self._spawn(
            self._commit(identity_of(self.origin, obj, etag, observed), shipped, targets, report)
        )
        return None

    async def _take_slots(self, n: int) -> None:
        """Room for ``n`` more objects waiting for their packs, taken all at
        once (workers each holding part of what they need would wait on one
        another forever). Without room, every open pack is sealed first: the
        waiting objects can only finish once the packs they wait for are
        durable."""
        while self._waiting + n > self.waiting_manifests:
            self._freed.clear()
            await self._budget.flush_all()
            if self._waiting + n > self.waiting_manifests:
                await self._freed.wait()
        self._waiting += n

    def _free_slots(self, n: int) -> None:
        self._waiting -= n
        self._freed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)

    async def _small(self, items: list[Item]) -> None:
        """A batch of small objects (small.py); those the origin cannot read
        in a batch go the ordinary way, one by one."""
        reader = batch_origin(self.origin)
        assert reader is not None
        try:
            datas: list[bytes | None] = await reader.read_many([o for o, _ in items])
        except Exception:  # e.g. the thread pool is gone: each object alone
            datas = [None] * len(items)
        groups: dict[tuple[int, ...], tuple[list[_Target], list[Small]]] = {}
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

    async def _small_group(self, targets: list[_Target], group: list[Small]) -> None:
        """Objects of a batch lacked by the same peers: shipped together."""
        try:
            shipped = await ship_many(
                [d for _, _, d in group], self.params, [t.writer for t in targets]
            )
            # The same peers failed for every object of the batch.
            targets = self._without_failed(targets, shipped[0]) if shipped else targets
        except Exception as exc:  # as the per-object path: each object reports it
            for obj, _, _ in group:
                self.summary.error(f"{obj.key!r}: {type(exc).__name__}: {exc}")
                self._done("error", obj.size)
            return
        done: list[tuple[SourceIdentity, Shipped]] = []
        for (obj, observed, _), one in zip(group, shipped, strict=True):
            self.summary.source_bytes += one.size
            etag = one.digest.hex() if self.origin.etag_is_digest else obj.etag
            done.append((identity_of(self.origin, obj, etag, observed), one))
        await self._take_slots(len(done))
        self._spawn(self._commit_group(done, targets))

    async def _commit_group(
        self, items: list[tuple[SourceIdentity, Shipped]], targets: list[_Target]
    ) -> None:
        """``_commit`` of a batch's objects at once: one task, and each
        peer's manifests handed to its group commit together."""
        try:
            ok = [False] * len(items)
            errors: dict[int, str] = {}
            await asyncio.gather(*(self._manifests_at(t, items, ok, errors) for t in targets))
        finally:
            self._free_slots(len(items))
        for i, (ident, _) in enumerate(items):
            if i in errors:
                self.summary.error(f"{ident.key!r}: {errors[i]}")
            self._done("replicated" if ok[i] and i not in errors else "error", ident.size)

    async def _manifests_at(
        self,
        t: _Target,
        items: list[tuple[SourceIdentity, Shipped]],
        ok: list[bool],
        errors: dict[int, str],
    ) -> None:
        """Write a batch's manifests at one peer; ``ok``/``errors`` per object."""
        manifests, which = [], []
        for i, (ident, shipped) in enumerate(items):
            try:
                names = await pack_names(shipped.placements[t.peer.name])
            except Exception as exc:  # its pack failed
                self._failed_at(t, i, exc, errors)
                continue
            manifests.append(shipped.manifest(ident, self.params, t.peer.name, names))
            which.append(i)
        for i, answer in zip(which, await t.manifests.put_many(manifests), strict=True):
            if isinstance(answer, BaseException):
                self._failed_at(t, i, answer, errors)
            else:
                ok[i] = True
                self.summary.bump(self.summary.manifests, t.peer.name, int(answer))

    def _failed_at(self, t: _Target, i: int, exc: BaseException, errors: dict[int, str]) -> None:
        if peer_failure(exc):
            self._mark_down(t, exc)  # the object is still replicated if another peer took it
        else:
            errors[i] = f"{type(exc).__name__}: {exc}"

    def _without_failed(self, targets: list[_Target], shipped: Shipped) -> list[_Target]:
        """The targets still shipping once the object is read; a peer that
        failed is marked down (the others keep their copy). Any other
        failure fails the object, as before."""
        for t in targets:
            exc = shipped.failures.get(t.peer.name)
            if exc is not None and not peer_failure(exc):
                raise exc
        for t in targets:
            if t.peer.name in shipped.failures:
                self._mark_down(t, shipped.failures[t.peer.name])
        return [t for t in targets if t.peer.name not in shipped.failures]

    async def _commit(
        self, ident: SourceIdentity, shipped: Shipped, targets: list[_Target], report: bool
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
            self._free_slots(1)
        if report:
            self._done(outcome, ident.size)

    async def _manifest_at(
        self, t: _Target, ident: SourceIdentity, shipped: Shipped, packs: Any
    ) -> bool:
        """Write the manifest at one peer; False when that peer failed."""
        try:
            if isinstance(packs, BaseException):
                raise packs
            m = shipped.manifest(ident, self.params, t.peer.name, packs)
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
        # A peer that held no manifest here before the run holds only what
        # this run wrote, all of it listed: a first copy skips the pass.
        live = [t for t in self._live() if t.had_manifests]
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
