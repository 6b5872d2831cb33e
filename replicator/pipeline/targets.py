"""Backfill's peers during one run: which are live, which lack an object.

A *target* is one peer seen by a backfill run: its counting backend, index
cache, pack writer and manifest group commit, and whether it is down.
Unlike a daemon lane (``lanes.py``), a target that fails is not retried:
backfill is a run with an end, so a peer whose retries are spent is marked
down, nothing more is sent to it, and the summary names it (exit 1). The
other peers go on: one peer's failure never costs another its copy.

:class:`Targets` also keeps the run's summary and progress, so the parts of
a run (``backfill.py``, ``commits.py``, the removal pass) report outcomes
one way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from replicator.config import StoreSettings
from replicator.origins import ObjectVersion, Origin
from replicator.pipeline.counting import CountingBackend
from replicator.pipeline.lanes import peer_failure
from replicator.pipeline.manifests import ManifestCommits
from replicator.pipeline.plan import PackWriter
from replicator.pipeline.reconcile import held_many
from replicator.pipeline.ship import Shipped
from replicator.pipeline.summary import BackfillSummary, NoProgress, Progress
from replicator.store.bulk import holds_any
from replicator.store.index_cache import IndexCache, cache_path
from replicator.store.peer import Peer


@dataclass
class Target:
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

    @property
    def name(self) -> str:
        return self.peer.name


async def open_target(peer: Peer, store: StoreSettings, manifests: str) -> Target:
    """A target over an opened peer: its index cache synced, and whether it
    holds any manifest under ``manifests`` (the run's prefix) yet."""
    backend = CountingBackend(peer.backend)
    cache = IndexCache(cache_path(store.cache_dir, peer.identity), peer.config.to_bytes())
    await cache.open()
    await cache.sync(backend)
    writer = PackWriter(peer.name, backend, cache, store.pack_size, store.compression)
    had = await holds_any(backend, manifests)
    return Target(peer, backend, cache, writer, ManifestCommits(backend), had_manifests=had)


#: The live peers lacking an object, and the observation number its manifest takes.
Lacking = tuple[list[Target], int]


class Targets:
    """The run's peers, its summary and its progress."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.all: list[Target] = []
        self.summary = BackfillSummary()
        self.progress = progress or NoProgress()

    def live(self) -> list[Target]:
        return [t for t in self.all if t.down is None]

    def totals(self, elapsed: float) -> None:
        """The per-peer figures of the summary, at the end of the run."""
        s = self.summary
        for t in self.all:
            stats = t.writer.stats
            s.shipped_bytes[t.name] = stats.shipped_bytes
            s.deduplicated_bytes[t.name] = stats.deduplicated_bytes
            s.stored_bytes[t.name] = stats.stored_bytes
            s.packs[t.name] = stats.packs
            s.put_requests[t.name] = t.backend.counts["put"]
            s.manifests.setdefault(t.name, 0)
            if t.peer.capabilities is not None:
                s.capabilities[t.name] = asdict(t.peer.capabilities)
        s.elapsed_seconds = elapsed

    def done(self, outcome: str, size: int) -> None:
        """One object finished (counted once, whatever number of peers)."""
        if outcome != "error":
            self.summary.count(outcome)
        self.progress.done(outcome, size)

    def mark_down(self, target: Target, exc: BaseException) -> None:
        """Stop sending to a peer whose retries are spent; the others go on.

        Nothing more is packed for it, so a dead peer costs at most the one
        open pack it already had. That pack stays in the seal budget: sealing
        it (and failing) is what releases the manifests waiting on it."""
        self.summary.bump(self.summary.not_sent, target.name)
        if target.down is not None:
            return
        target.down = f"{type(exc).__name__}: {exc}"
        self.summary.down[target.name] = target.down
        self.summary.error(
            f"destination {target.name!r} is down, nothing more is sent to it "
            f"this run: {target.down}"
        )

    def failed_at(self, target: Target, exc: BaseException) -> str | None:
        """A peer's failure marks it down (None: the object may still be
        replicated at another peer); any other is the object's error."""
        if peer_failure(exc):
            self.mark_down(target, exc)
            return None
        return f"{type(exc).__name__}: {exc}"

    async def lacking(self, origin: Origin, objs: Sequence[ObjectVersion]) -> list[Lacking]:
        """For each object, the live peers lacking it and the observation
        number its manifest takes (one name at every peer: after each one's
        manifests at that event time)."""
        if not objs:
            return []
        live = self.live()
        for t in self.all:
            if t.down is not None:
                self.summary.bump(self.summary.not_sent, t.name, len(objs))
        held = await asyncio.gather(
            *(held_many(t.backend, origin, objs) for t in live), return_exceptions=True
        )
        out: list[Lacking] = [([], 0) for _ in objs]
        for t, h in zip(live, held, strict=True):
            if isinstance(h, BaseException):
                if not peer_failure(h):
                    raise h
                for _ in objs:
                    self.mark_down(t, h)
                continue
            for i, one in enumerate(h):
                if not one.held:
                    out[i][0].append(t)
                    out[i] = (out[i][0], max(out[i][1], one.observed))
        return out

    def without_failed(self, targets: list[Target], shipped: Shipped) -> list[Target]:
        """The targets still shipping once the object is read; a peer that
        failed is marked down (the others keep their copy). Any other
        failure fails the object."""
        for t in targets:
            exc = shipped.failures.get(t.name)
            if exc is not None and not peer_failure(exc):
                raise exc
        for t in targets:
            if t.name in shipped.failures:
                self.mark_down(t, shipped.failures[t.name])
        return [t for t in targets if t.name not in shipped.failures]
