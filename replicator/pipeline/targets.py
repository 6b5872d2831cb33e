"""Backfill's peers during one run, and the tally that makes its summary.

A backfill is the daemon's service driven by a listing: each peer is a
*lane* (``lanes.py``) with the run policy (``Policy.RUN``): a peer whose
retries are spent is down for the rest of the run, nothing more is sent to
it, and the summary names it (exit 1); the other peers go on. A run's lane
has one pack writer (a backfill's packs fill: no size classes) and seals
on count only, or when the run has nothing left to read.

:class:`Tally` hears every lane's outcome from the service (it is the
service's observer) and keeps the run's :class:`BackfillSummary` and
progress, so the parts of a run (the listing source, the service, the
removals) report one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace

from replicator.config import StoreSettings
from replicator.events import ChangeEvent
from replicator.pipeline.counting import CountingBackend
from replicator.pipeline.lanes import Lane, Policy, peer_failure
from replicator.pipeline.plan import PackWriter
from replicator.pipeline.summary import BackfillSummary, NoProgress, Progress
from replicator.pipeline.tracking import Observer
from replicator.store.index_cache import IndexCache, cache_path
from replicator.store.peer import Peer

#: No size classes in a run: every object is a "small" one to the service
#: (one writer, every worker).
NO_LARGE = 1 << 62
#: Versions a run's lane holds (read, or waiting for their packs), in
#: multiples of those whose waiting seals the open pack.
READ_AHEAD = 3


async def open_run_lane(peer: Peer, store: StoreSettings, waiting: int) -> Lane:
    """A run's lane over an opened peer (its requests counted), its index
    cache synced; ``waiting`` versions waiting for their packs seal them."""
    counted = replace(peer, backend=CountingBackend(peer.backend))
    cache = IndexCache(cache_path(store.cache_dir, peer.identity), peer.config.to_bytes())
    await cache.open()
    try:
        await cache.sync(counted.backend)
    except BaseException:
        await cache.close()
        raise
    writer = PackWriter(peer.name, counted.backend, cache, store.pack_size, store.compression)
    lane = Lane(
        counted,
        writer,
        cache,
        max_pack_delay=None,
        retry_cap=0.0,
        policy=Policy.RUN,
        large_object_size=NO_LARGE,
    )
    # ``waiting`` versions waiting seal the open pack; the lane takes up to
    # READ_AHEAD times as many, so the next pack fills while the sealed one
    # and its manifests are made durable (a lane that stopped at ``waiting``
    # sat idle through the syncs of every seal).
    lane.seals.limit = waiting
    lane.max_active = READ_AHEAD * waiting
    return lane


class Tally(Observer):
    """The run's summary and progress, from the lanes' outcomes."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.summary = BackfillSummary()
        self.progress = progress or NoProgress()
        #: Versions durable at some peer, and each one's own error if any.
        self._held: set[ChangeEvent] = set()
        self._errors: dict[ChangeEvent, str] = {}

    # ------------------------------------------------------------ from the service

    def durable(
        self, lane: str, event: ChangeEvent, written: bool, shipped: int, deduplicated: int
    ) -> None:
        if event.removed:
            self.summary.removed += written
        else:
            self._held.add(event)
        self.summary.bump(self.summary.manifests, lane, int(written))

    def failed(self, lane: str | None, event: ChangeEvent, exc: BaseException) -> None:
        # A peer's own failure takes it down (one error for the peer, not
        # one per object); anything else is this version's error.
        if lane is None or not peer_failure(exc):
            self._errors.setdefault(event, f"{event.key!r}: {type(exc).__name__}: {exc}")
        elif lane is not None:
            self.not_sent(lane, event)

    def behind(self, lane: str, event: ChangeEvent) -> None:
        self.summary.bump(self.summary.caught_up, lane)

    def down(self, lane: str, reason: str) -> None:
        self.summary.down[lane] = reason
        self.summary.error(
            f"destination {lane!r} is down, nothing more is sent to it this run: {reason}"
        )

    def not_sent(self, lane: str, event: ChangeEvent) -> None:
        self.summary.bump(self.summary.not_sent, lane)

    def read(self, event: ChangeEvent, size: int) -> None:
        self.summary.source_bytes += size

    # ------------------------------------------------------------ per object

    def done(self, outcome: str, size: int) -> None:
        """One object finished (counted once, whatever number of peers)."""
        if outcome != "error":
            self.summary.count(outcome)
        self.progress.done(outcome, size)

    def unchanged(self, size: int) -> None:
        self.summary.unchanged_bytes += size
        self.done("unchanged", size)

    def ended(self, event: ChangeEvent, failed: bool) -> str:
        """The object outcome of a version every lane is done with: replicated
        once some peer holds it and it had no error of its own (a peer that
        went down is reported once, as the peer's error)."""
        held = event in self._held
        self._held.discard(event)
        error = self._errors.pop(event, None)
        if error is not None:
            self.summary.error(error)
            return "error"
        return "replicated" if held or not failed else "error"

    def totals(self, lanes: Sequence[Lane], elapsed: float) -> None:
        """The per-peer figures of the summary, at the end of the run."""
        s = self.summary
        for lane in lanes:
            stats = lane.writer.stats
            s.shipped_bytes[lane.name] = stats.shipped_bytes
            s.deduplicated_bytes[lane.name] = stats.deduplicated_bytes
            s.stored_bytes[lane.name] = stats.stored_bytes
            s.packs[lane.name] = stats.packs
            backend = lane.backend
            s.put_requests[lane.name] = (
                backend.counts["put"] if isinstance(backend, CountingBackend) else 0
            )
            s.manifests.setdefault(lane.name, 0)
            if lane.peer.capabilities is not None:
                s.capabilities[lane.name] = asdict(lane.peer.capabilities)
        s.elapsed_seconds = elapsed
