"""Backfill: replicate the current state of a source listing to every peer.

A backfill is the daemon's pipeline with a listing for its source: the
listing (``sources/listing.py``) yields an event for each listed version
some peer lacks, routed to exactly those peers, then, after a whole
listing, the tombstones the mass-deletion guard allows; the service
(``service.py``, each peer a lane with the run policy) reads each version
once, ships it to the lanes that want it (small files in batches), and
writes each peer's manifest once its packs are durable. A peer that is
behind is left out of a shared read and reads the version again alone; a
peer whose retries are spent is down for the run (exit 1, named in the
summary). The run ends when the listing source has seen every event it
yielded done; the summary is made from the lanes' outcomes (``Tally``).

Memory: ``store.concurrency`` reads in flight, at most ``service.max_pending``
listed versions waiting per peer (the listing is paced by the service), of
which at most ``targets.READ_AHEAD`` times ``waiting_manifests`` read or waiting
for their packs (``waiting_manifests`` waiting seal the open pack). The
listing is spilled to a temporary file as it streams by, for the removal
plans: nothing grows with the object count.
"""

from __future__ import annotations

import asyncio
import time

from replicator._native import ChunkerParams
from replicator.config import ServiceSettings, Settings, StoreSettings
from replicator.events import ChangeEvent
from replicator.origins import ObjectReader, Origin, make_origin
from replicator.pipeline.lanes import Lane
from replicator.pipeline.service import Service, version_of
from replicator.pipeline.ship import BEHIND_SECONDS
from replicator.pipeline.small import batch_origin
from replicator.pipeline.summary import BackfillSummary, Progress
from replicator.pipeline.targets import NO_LARGE, Tally, open_run_lane
from replicator.pipeline.tracking import NoMeter
from replicator.sources.listing import SUPERSEDED_TRIES, ListingSource
from replicator.store.bulk import holds_any
from replicator.store.format import manifest_prefix
from replicator.store.peer import Peer, opened_peers
from replicator.store.subtrees import SubtreeCache

__all__ = ["SUPERSEDED_TRIES", "Backfill", "run_backfill"]

#: Objects read but waiting for their packs to seal, per peer; reaching it
#: seals the peer's open pack (a pack also seals at ``store.pack_size``, so
#: its bytes stay bounded). Each pack costs its own syncs (pack, index, their
#: directories) and its manifests' group commits: at 256, a first copy of
#: 5,000 small files made 15-18 packs and 21-25 segments; at 1024, 7 and 10,
#: ~9 % less CPU for the run (docs/performance.md, "small (third pass)").
WAITING_MANIFESTS = 1024
#: Listed versions pending per peer before the listing waits (backpressure):
#: above what a run's lane holds (``targets.READ_AHEAD`` * ``WAITING_MANIFESTS``),
#: or its workers would find nothing listed while the lane has room.
MAX_PENDING = 4096
#: After the run, how long the service may take to stop (it is idle by then).
DRAIN_SECONDS = 30.0


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
        self.peers = peers
        self.params = params
        self.store = store
        self.tally = Tally(progress)
        self.summary = self.tally.summary
        self.waiting = waiting_manifests
        self.allow_deletes = allow_deletes
        #: A peer whose last pack took longer than this to write, and whose
        #: writer would wait, is left out of a shared read (reads it again alone).
        self.behind_seconds = behind_seconds

    async def run(self, prefix: str = "") -> BackfillSummary:
        started = time.monotonic()
        lanes: list[Lane] = []
        try:
            for peer in self.peers:
                lanes.append(await open_run_lane(peer, self.store, self.waiting))
            await self._through_service(lanes, prefix)
        finally:
            for lane in lanes:
                await lane.close()
        self.tally.totals(lanes, time.monotonic() - started)
        return self.summary

    async def _through_service(self, lanes: list[Lane], prefix: str) -> None:
        key_prefix = manifest_prefix(self.origin.bucket, self.origin.key_prefix(prefix))
        had = await asyncio.gather(*(holds_any(lane.backend, key_prefix) for lane in lanes))
        listing = ListingSource(
            self.origin,
            lanes,
            self.tally,
            prefix,
            max_fraction=self.store.max_delete_fraction,
            allow_deletes=self.allow_deletes,
            had_manifests=had,
        )
        service = self._service(listing, lanes)
        listing.take_down = service.take_down
        listing.on_listed = service.finish_up
        service.start()
        try:
            await service.intake_done()
        finally:
            await service.drain(DRAIN_SECONDS)
            await listing.close()

    def _service(self, listing: ListingSource, lanes: list[Lane]) -> Service:
        async def opener(event: ChangeEvent) -> ObjectReader:
            return await self.origin.open(version_of(event))

        # Not validated (as pydantic's model_construct was): backfill has no
        # large class, which no operator may configure.
        settings = ServiceSettings().model_copy(
            update=dict(
                max_in_flight=self.store.concurrency,
                max_large_in_flight=0,
                large_object_size=NO_LARGE,
                max_pending=MAX_PENDING,
            )
        )
        return Service(
            listing,
            opener,
            lanes,
            NoMeter(),
            settings,
            params=self.params,
            window_size=self.origin.window_size,
            etag_is_digest=self.origin.etag_is_digest,
            behind_seconds=self.behind_seconds,
            route=listing.route,
            observer=self.tally,
            batch_reader=batch_origin(self.origin),
            subtrees=SubtreeCache(self.store.cache_dir),
        )


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
