"""The removals a *whole* listing implies, for ``ListingSource`` (sources/listing.py).

After the listing, each peer that held manifests under the prefix before the
run gets a removal plan: its newest manifests checked against the listed
keys, held in memory up to a limit (``ListedKeys``, then
``removals.plan_removals_of``); past it the listing is replayed from a spill
and merged with the peer's keys in key order (``removals.plan_removals``).
The mass-deletion guard (``removal_refusal``, ``--allow-deletes``) decides
per peer whether its plan is carried out; ``Removals.allowed`` yields the
tombstones of the plans it allows, and the source turns each into an event.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

from replicator.errors import ReplicatorError
from replicator.origins import ObjectVersion, Origin
from replicator.pipeline.compare import Spill, key_bytes
from replicator.pipeline.lanes import Lane
from replicator.pipeline.removals import (
    RemovalPlan,
    plan_removals,
    plan_removals_of,
    removal_refusal,
)
from replicator.pipeline.summary import BackfillSummary

#: A tombstone to write: the lane's index in the run, the lane, the key and
#: the tombstone's event time.
Tombstone = tuple[int, Lane, str, int]


class ListedKeys:
    """The keys a listing yielded, for the removal plans: a set in memory up
    to ``limit`` keys; past it every key is in a spill file, in key order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: The keys while they fit in memory, else None.
        self.keys: set[str] | None = set()
        self._spill: Spill[str] | None = None

    def update(self, keys: Iterable[str]) -> None:
        if self._spill is not None:
            for key in keys:
                self._spill.add(key)  # the listing goes on in key order
            return
        assert self.keys is not None
        self.keys.update(keys)
        if len(self.keys) > self.limit:
            import tempfile  # noqa: PLC0415 - only past LISTED_IN_MEMORY (start-up)

            fd, path = tempfile.mkstemp(prefix="replicator-listing-")
            os.close(fd)
            self._spill = Spill(Path(path), str, str)
            for k in sorted(self.keys, key=key_bytes):
                self._spill.add(k)
            self.keys = None

    def replay(self) -> AsyncIterator[str]:
        assert self._spill is not None, "replay is for a spilled listing"
        return self._spill.replay()

    def remove(self) -> None:
        if self._spill is not None:
            self._spill.remove()


class Removals:
    """The removal pass of one listing of ``origin`` under ``prefix``."""

    def __init__(
        self,
        origin: Origin,
        prefix: str,
        summary: BackfillSummary,
        *,
        max_fraction: float,
        allow_deletes: bool,
    ) -> None:
        self.origin = origin
        self.prefix = prefix
        self.summary = summary
        self.max_fraction = max_fraction
        self.allow_deletes = allow_deletes

    async def allowed(
        self, lanes: Sequence[tuple[int, Lane]], listed: ListedKeys
    ) -> AsyncIterator[Tombstone]:
        """The tombstones for keys a peer of ``lanes`` holds that the listing
        lacks, at each peer whose plan the guard allows."""
        key_prefix = self.origin.key_prefix(self.prefix)
        unlisted = [where for where, _ in self.origin.unlisted]
        plans = await asyncio.gather(
            *(self._plan(lane, listed, key_prefix, unlisted) for _, lane in lanes),
            return_exceptions=True,
        )
        for (i, lane), plan in zip(lanes, plans, strict=True):
            if isinstance(plan, RemovalPlan):
                async for key, when_ns in self._tombstones(lane, plan):
                    yield i, lane, key, when_ns
            elif isinstance(plan, ReplicatorError | OSError):
                self.summary.error(f"destination {lane.name!r}: removal pass failed: {plan}")
            else:
                raise plan

    async def _plan(
        self, lane: Lane, listed: ListedKeys, key_prefix: str, unlisted: list[str]
    ) -> RemovalPlan:
        bucket, keys = self.origin.bucket, listed.keys
        if keys is not None:
            return await plan_removals_of(
                lane.backend, lane.name, keys, bucket, key_prefix, unlisted=unlisted
            )
        versions = (ObjectVersion(key, 0, 0) async for key in listed.replay())
        return await plan_removals(
            lane.backend, lane.name, versions, bucket, key_prefix, unlisted=unlisted
        )

    async def _tombstones(self, lane: Lane, plan: RemovalPlan) -> AsyncIterator[tuple[str, int]]:
        refusal = removal_refusal(plan, self.max_fraction, allow=self.allow_deletes)
        if refusal is not None:
            self.summary.refused_removals[lane.name] = plan.count
            self.summary.error(refusal)
            plan.discard()
            return
        now = time.time_ns()
        try:
            if plan.removals is not None:
                async for key, newest_ns in plan.removals.replay():
                    yield key, max(now, newest_ns + 1)
        finally:
            plan.discard()
