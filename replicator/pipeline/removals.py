"""Tombstones for keys the source no longer has, behind a mass-deletion guard.

A removal pass has two steps, so that a peer is never half-tombstoned:

1. ``plan_removals`` walks the source listing against the peer's manifests
   (``compare.compare``: two sorted streams, bounded memory) and counts the
   peer's live keys and those the source no longer lists. The latter are
   spilled to a temporary file, not kept in memory. ``plan_removals_of``
   does the same for a listing small enough to be held as a set of keys
   (``sources/listing.py`` keeps up to ``LISTED_IN_MEMORY``): one walk over
   the peer's newest manifests in any order, no sort, no spill of the
   listing; a format 3 peer answers it from its header table.
2. ``removal_refusal`` (the guard, as rclone's ``--max-delete``) refuses a
   plan that would tombstone more than ``store.max_delete_fraction`` of the
   peer's live keys, or any key when the source listed nothing -- a typo,
   an unmounted volume or a wrong bucket must never read as "everything was
   deleted". Only then ``apply_removals`` writes the tombstones.

Backfill's listing source (``sources/listing.py``) plans and guards them at
every live peer after a whole listing, and hands the tombstones the guard
allows to the service as removal events.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterable, Sequence, Set
from dataclasses import field
from pathlib import Path
from typing import Any

from replicator import failpoints
from replicator._native import ChunkerParams
from replicator.errors import ReplicatorError
from replicator.origins import ObjectVersion
from replicator.pipeline.compare import Spill, compare, peer_keys
from replicator.pipeline.manifests import tombstone
from replicator.pipeline.reconcile import newest_at_peer, read_head
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.format import Manifest, SourceIdentity
from replicator.store.manifest_store import ManifestStore, entry_of_ref, manifests_of

#: Tombstones written in one group commit by ``apply_removals``.
TOMBSTONE_BATCH = 512


class MassDeletionRefused(ReplicatorError):
    """A removal pass would tombstone too much; nothing was tombstoned."""


@record
class RemovalPlan:
    """What a removal pass at one peer would do (before it does anything)."""

    destination: str
    listed: int = 0  # keys the source listed
    live: int = 0  # keys live at the peer: still listed, or not listed but not tombstoned
    #: (key, event time of the peer's newest version) of each key to tombstone.
    removals: Spill[tuple[str, int]] | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return self.removals.count if self.removals is not None else 0

    def discard(self) -> None:
        if self.removals is not None:
            self.removals.remove()
            self.removals = None


async def plan_removals(
    backend: Backend | ManifestStore,
    destination: str,
    source: AsyncIterable[ObjectVersion],
    bucket: str,
    key_prefix: str,
    *,
    unlisted: Sequence[str] = (),
) -> RemovalPlan:
    """Compare ``source`` (a listing in key order) with the peer's manifests.

    Keys under an ``unlisted`` prefix (a source directory that could not be
    read) are never planned for removal."""
    plan = RemovalPlan(destination, removals=_removals_spill())
    try:
        async for pair in compare(source, peer_keys(backend, bucket, key_prefix)):
            plan.listed += pair.source is not None
            if pair.peer is None:
                continue
            if pair.source is not None or pair.key.startswith(tuple(unlisted)):
                plan.live += 1
                continue
            newest = await read_head(backend, entry_of_ref(pair.peer))
            if newest is None or newest[0]:
                continue  # already recorded as removed: a replay writes nothing
            plan.live += 1
            assert plan.removals is not None
            plan.removals.add((pair.key, newest[1].event_time_ns))
    except BaseException:
        plan.discard()
        raise
    return plan


async def plan_removals_of(
    backend: Backend | ManifestStore,
    destination: str,
    listed: Set[str],
    bucket: str,
    key_prefix: str,
    *,
    unlisted: Sequence[str] = (),
) -> RemovalPlan:
    """``plan_removals`` for a listing given as the set of its keys."""
    plan = RemovalPlan(destination, listed=len(listed))
    try:
        peer, skipped = newest_at_peer(backend, bucket, key_prefix, skip=listed), tuple(unlisted)
        async for key, entry, known in peer:
            if entry is None or key.startswith(skipped):
                plan.live += 1  # listed (``skip``), or under a directory that was not
                continue
            removed, newest_ns = known, entry.event_time_ns
            if removed is None:  # not known without reading it
                head = await read_head(backend, entry)
                if head is None:
                    continue  # gone meanwhile
                removed, newest_ns = head[0], head[1].event_time_ns
            if removed:
                continue  # already recorded as removed: a replay writes nothing
            plan.live += 1
            if plan.removals is None:
                plan.removals = _removals_spill()
            plan.removals.add((key, newest_ns))
    except BaseException:
        plan.discard()
        raise
    return plan


def _removals_spill() -> Spill[tuple[str, int]]:
    import tempfile  # noqa: PLC0415 - only when a removal is planned (start-up)

    fd, path = tempfile.mkstemp(prefix="replicator-removals-")
    os.close(fd)
    return Spill(Path(path), list, _removal)


def _removal(v: Any) -> tuple[str, int]:
    return (str(v[0]), int(v[1]))


def removal_refusal(plan: RemovalPlan, max_fraction: float, *, allow: bool) -> str | None:
    """Why the plan must not be applied, or None when it may."""
    n, live, dest = plan.count, plan.live, plan.destination
    if allow or n == 0:
        return None
    advice = (
        "nothing was tombstoned; check the source, and rerun with "
        "`replicator backfill --allow-deletes` only if the source really removed them"
    )
    if plan.listed == 0:
        return (
            f"destination {dest!r}: the source listed no object, refusing to tombstone "
            f"its {n} live keys; {advice}"
        )
    if n > max_fraction * live:
        return (
            f"destination {dest!r}: refusing to tombstone {n} of {live} live keys "
            f"({n / live:.0%} > store.max_delete_fraction {max_fraction:g}); {advice}"
        )
    return None


def check_removals(plan: RemovalPlan, max_fraction: float, *, allow: bool) -> None:
    """``removal_refusal`` as an exception (exit 1), for callers that stop on it."""
    if (why := removal_refusal(plan, max_fraction, allow=allow)) is not None:
        raise MassDeletionRefused(why)


async def apply_removals(
    backend: Backend | ManifestStore,
    plan: RemovalPlan,
    *,
    source_id: str,
    bucket: str,
    params: ChunkerParams,
    now_ns: int | None = None,
) -> int:
    """Write the plan's tombstones; how many were new. Consumes the plan.

    They go ``TOMBSTONE_BATCH`` at a time through the peer's ManifestStore
    (one group commit each), each durable before the next batch starts."""
    now = time.time_ns() if now_ns is None else now_ns
    store = manifests_of(backend)
    written = 0
    batch: list[Manifest] = []
    try:
        if plan.removals is not None:
            async for key, newest_ns in plan.removals.replay():
                # The removal must sort after the version it removes.
                when = max(now, newest_ns + 1)
                ident = SourceIdentity(source_id, bucket, key, "", "", 0, when)
                batch.append(tombstone(ident, params))
                if len(batch) >= TOMBSTONE_BATCH:
                    written += await _put_tombstones(store, batch)
                    batch = []
            written += await _put_tombstones(store, batch)
    finally:
        plan.discard()
    return written


async def _put_tombstones(store: ManifestStore, batch: list[Manifest]) -> int:
    """Put one batch; how many were new. The first failed tombstone raises."""
    if not batch:
        return 0
    failpoints.hit(failpoints.BEFORE_MANIFEST_PUT)
    answers = await store.put_many(batch)
    failpoints.hit(failpoints.AFTER_MANIFEST_PUT)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return sum(1 for a in answers if a is True)
