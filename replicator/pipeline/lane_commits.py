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
from itertools import compress

from replicator._native import ChunkerParams
from replicator.events import ChangeEvent
from replicator.pipeline.identity import version_identity
from replicator.pipeline.lanes import Lane
from replicator.pipeline.manifests import CreatedTexts, ManifestText
from replicator.pipeline.ship import Shipped, byte_counts
from replicator.pipeline.small import ShippedBatch
from replicator.pipeline.tracking import Outcomes
from replicator.store.format import SourceIdentity
from replicator.store.placed import Placed


class LaneCommits(Outcomes):
    params: ChunkerParams
    etag_is_digest: bool
    #: Writes the manifests of batched versions (``params``'s chunker).
    _texts: CreatedTexts
    #: Per lane, the batches waiting for their packs: (placements, versions).
    _waiting: dict[str, list[tuple[Placed, int]]]
    #: The source has nothing more to hand out (``Service.finish_up``).
    finishing: bool

    def _start_commits(self) -> None:
        self._texts = CreatedTexts(self.params)
        self._waiting = {}

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
        self, lane: Lane, events: Sequence[ChangeEvent], shipped: ShippedBatch
    ) -> None:
        """``_commit`` of a batch's versions at one lane, together: one wait
        for their packs, their manifests written out in one pass
        (``CreatedTexts``) and handed to the group commit as one group."""
        placed = shipped.placements[lane.name]
        waiting = self._waiting.setdefault(lane.name, [])
        mine = (placed, len(events))
        waiting.append(mine)
        try:
            if (self.finishing and not lane.want) or _on_open_pack(
                lane, waiting
            ) >= lane.seals.limit:
                # Nothing else would fill the open pack (the run is ending and
                # nothing more is wanted here), or as many versions wait on
                # it as the seal budget allows: seal now.
                await lane.seals.flush_all()
            # One wait for every pack of the batch (one waiter of the lane's
            # seal budget, its seal timers armed), not one task per version.
            with contextlib.suppress(Exception):  # a failed pack: told per version below
                await lane.seals.wait_placed([placed])
        finally:
            waiting.remove(mine)
        names = await pack_outcomes(placed)
        texts, which = self._batch_texts(lane, events, shipped, names)
        answers = await lane.manifests.put_texts(texts)
        for (event, lo, hi), answer in zip(which, answers, strict=True):
            if isinstance(answer, BaseException):
                self._lane_failed(lane, event, answer, "commit")
                continue
            sent, total = _sent_of(placed, lo, hi)
            self._durable(lane, event, sent, total - sent, written=answer)

    def _batch_texts(
        self,
        lane: Lane,
        events: Sequence[ChangeEvent],
        shipped: ShippedBatch,
        names: list[bytes | BaseException],
    ) -> tuple[list[ManifestText], list[tuple[ChangeEvent, int, int]]]:
        """The manifest of each version whose packs are durable, and (event,
        first chunk, end chunk) of each; the others are told here."""
        placed = shipped.placements[lane.name]
        hexes = [n.hex() if isinstance(n, bytes) else "" for n in names]
        ix, starts, chunk_digests = placed.pack_ix, shipped.starts, shipped.chunk_digests
        texts: list[ManifestText] = []
        which: list[tuple[ChangeEvent, int, int]] = []
        for k, event in enumerate(events):
            lo, hi = starts[k], starts[k + 1]
            failed = [e for i in range(lo, hi) if isinstance(e := names[ix[i]], BaseException)]
            if failed:  # that version's pack failed
                self._lane_failed(lane, event, failed[0], "commit")
            elif self._torn and lane.name in self._torn.get(event, ()):
                self._finish(lane, event, superseded=True)
            else:
                digest = shipped.digests[k]
                etag = digest.hex() if self.etag_is_digest else event.etag
                # A listed version: after the peers' manifests of that event time.
                ident = (shipped.sizes[k], digest, etag, event.observed if event.listed else 0)
                chunks = (chunk_digests, placed, lo, hi)
                texts.append(self._texts.text(event, ident, chunks, hexes))
                which.append((event, lo, hi))
        return texts, which


def _sent_of(placed: Placed, lo: int, hi: int) -> tuple[int, int]:
    """(bytes shipped, bytes in all) of chunks ``lo`` to ``hi`` of ``placed``."""
    lengths, new = placed.lengths, placed.new
    if hi - lo == 1:  # most small objects: one chunk, no slices
        return (lengths[lo] if new[lo] else 0), lengths[lo]
    part = lengths[lo:hi]
    return sum(compress(part, new[lo:hi])), sum(part)


async def pack_outcomes(placed: Placed) -> list[bytes | BaseException]:
    """Per pack of ``placed`` (``placed.packs`` order): its durable name, or
    the error that failed it. Waits for those not written yet."""
    out: list[bytes | BaseException] = []
    for p in placed.packs:
        if isinstance(p, bytes):
            out.append(p)
            continue
        try:
            out.append(await p.name)
        except Exception as exc:
            out.append(exc)
    return out


def _on_open_pack(lane: Lane, waiting: list[tuple[Placed, int]]) -> int:
    """Batched versions waiting on the lane's open pack. (Those of packs
    sealed already do not count: while a sealed pack is written, counting
    them made every batch after it seal a pack of its own.)"""
    return sum(
        n
        for placed, n in waiting
        if any(not isinstance(p, bytes) and lane.writer.is_open(p) for p in placed.packs)
    )
