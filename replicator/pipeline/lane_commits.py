"""The service's commit step at one lane: packs durable, then manifests.

A version read once is committed at each lane on its own (a base of
:class:`~replicator.pipeline.service.Service`): its packs durable at that
peer (invariant 1: a manifest takes only durable pack names), then its
manifest through the lane's group commit. A batch of small versions
(``small.py``) waits for its packs together and hands its manifests to
the group commit together: one task per lane and batch, not per object.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from replicator._native import ChunkerParams
from replicator.events import ChangeEvent
from replicator.pipeline.durable import pack_names
from replicator.pipeline.identity import version_identity
from replicator.pipeline.lanes import Lane
from replicator.pipeline.ship import Shipped, byte_counts
from replicator.pipeline.tracking import Outcomes
from replicator.store.format import Manifest, SourceIdentity
from replicator.store.placed import Placed


class LaneCommits(Outcomes):
    params: ChunkerParams
    etag_is_digest: bool
    #: The source has nothing more to hand out (``Service.finish_up``).
    finishing: bool

    def _identity(self, event: ChangeEvent, fan: Shipped) -> SourceIdentity:
        ident = version_identity(event, fan.size, fan.digest, etag_is_digest=self.etag_is_digest)
        if event.listed:  # after the peers' manifests of that event time
            ident = replace(ident, observed=event.observed)
        return ident

    async def _commit(self, lane: Lane, event: ChangeEvent, fan: Shipped, *, large: bool) -> None:
        """Packs durable, then the manifest (invariant 1), at one lane."""
        placed = fan.placements[lane.name]
        try:
            # A daemon change seals its pack by its own age (durable.py); a
            # listing's versions are old by nature and fill packs instead.
            since = None if event.listed else event.event_time_ns
            # The run is ending and nothing else is under way at this lane:
            # no object could fill the open pack, seal it now (not after the
            # finishing delay: the last object of every backfill waited it).
            alone = self.finishing and len(lane.active) <= 1
            names = await lane.resolve(placed, large=large or alone, since_ns=since)
            if lane.name in self._torn.get(event, ()):
                self._finish(lane, event, superseded=True)
                return
            ident = self._identity(event, fan)
            # Group commit: answered once the manifest is durable, with the
            # manifests of the same batch (one sync for all of them).
            written = await lane.manifests.put(fan.manifest(ident, self.params, lane.name, names))
        except Exception as exc:
            self._lane_failed(lane, event, exc, "commit")
            return
        shipped, deduplicated = byte_counts(placed)
        self._durable(lane, event, shipped, deduplicated, written=written)

    async def _tombstone(self, lane: Lane, event: ChangeEvent) -> None:
        try:
            written = await lane.tombstone(event, self.params)
        except Exception as exc:
            self._lane_failed(lane, event, exc, "tombstone")
            return
        self._durable(lane, event, 0, 0, written=written)

    async def _commit_batch(
        self, lane: Lane, events: Sequence[ChangeEvent], fans: Sequence[Shipped]
    ) -> None:
        """``_commit`` of a batch's versions at one lane, together."""
        placed = [fan.placements[lane.name] for fan in fans]
        if self.finishing or len(lane.active) >= lane.max_active:
            # Nothing else would fill the open pack (the run is ending), or
            # the lane takes no more work until these are durable: seal now.
            await lane.seals.flush_all()
        # One wait for every pack of the batch (one waiter of the lane's
        # seal budget, its seal timers armed), not one task per version.
        every = Placed()
        every.packs = list(dict.fromkeys(pack for p in placed for pack in p.packs))
        with contextlib.suppress(Exception):  # a failed pack: told per version below
            await lane.seals.wait_placed([every])
        names: list[Any] = []
        for p in placed:  # durable by now: answered without waiting
            try:
                names.append(await pack_names(p))
            except Exception as exc:  # that version's pack failed
                names.append(exc)
        manifests: list[Manifest] = []
        which: list[tuple[ChangeEvent, Shipped]] = []
        for event, fan, got in zip(events, fans, names, strict=True):
            if isinstance(got, BaseException):
                self._lane_failed(lane, event, got, "commit")
            elif lane.name in self._torn.get(event, ()):
                self._finish(lane, event, superseded=True)
            else:
                ident = self._identity(event, fan)
                manifests.append(fan.manifest(ident, self.params, lane.name, got))
                which.append((event, fan))
        answers = await lane.manifests.put_many(manifests)
        for (event, fan), answer in zip(which, answers, strict=True):
            if isinstance(answer, BaseException):
                self._lane_failed(lane, event, answer, "commit")
            else:
                shipped, deduplicated = byte_counts(fan.placements[lane.name])
                self._durable(lane, event, shipped, deduplicated, written=answer)
