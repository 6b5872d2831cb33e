"""A listing as a source: an origin's current versions, as ChangeEvents.

``ListingSource`` pages the origin's listing and checks each page against
every live lane's manifests (``reconcile.held_many``: one batched read per
peer and page). A version every peer holds is *unchanged* and never read;
any other becomes one event, routed to exactly the peers that lack it
(``route``, for ``Service.take(event, lanes=...)``) and carrying the
observation number its manifest takes (``ChangeEvent.listed``). After a
*whole* listing it yields the tombstone events of the removals at each peer
that held manifests before the run, as far as the mass-deletion guard allows
(planned and guarded in ``sources/listing_removals.py``; the listed keys are
held in memory up to ``LISTED_IN_MEMORY``, spilled past it); a failed or
partial listing yields none ("absent" proves nothing then).

It ends once every event it yielded is done. A version superseded before
or while it was read is refreshed and yielded again (its current version),
up to ``SUPERSEDED_TRIES`` reads; then it is the object's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from replicator.errors import ReplicatorError
from replicator.events import ChangeEvent, Kind, Position
from replicator.origins import ObjectVersion, Origin
from replicator.pipeline.lanes import Lane, peer_failure
from replicator.pipeline.reconcile import held_many
from replicator.pipeline.targets import Tally
from replicator.sources import Backlog, Outcome
from replicator.sources.listing_removals import ListedKeys, Removals

__all__ = ["HELD_BATCH", "LISTED_IN_MEMORY", "SUPERSEDED_TRIES", "ListedKeys", "ListingSource"]

#: Listed objects checked against the peers' manifests together (one batched
#: read per peer): an unchanged re-run is mostly this check.
HELD_BATCH = 256
#: Listed keys kept in memory for the removal plans (about 100 bytes each);
#: a longer listing is spilled to a temporary file instead, and each peer's
#: keys are merged with it in key order (bounded memory, slower).
LISTED_IN_MEMORY = 100_000
#: Pages of the listing read ahead of the held check (memory: PREFETCH *
#: HELD_BATCH listed versions).
PREFETCH = 8
#: Reads of one key before a file that changes on every read is reported
#: (exit 1) instead of retried forever.
SUPERSEDED_TRIES = 3

#: Per listed object: the names of the live lanes lacking it, and the
#: observation number its manifest takes (None: its check failed).
Lacking = tuple[set[str], int] | None


class ListingSource:
    """One listing of ``origin`` under ``prefix``, checked against ``lanes``."""

    name = "listing"

    def __init__(
        self,
        origin: Origin,
        lanes: Sequence[Lane],
        tally: Tally,
        prefix: str = "",
        *,
        max_fraction: float,
        allow_deletes: bool,
        had_manifests: Sequence[bool],
    ) -> None:
        self.origin = origin
        self.lanes = list(lanes)
        self.tally = tally
        self.summary = tally.summary
        self.prefix = prefix
        self.max_fraction = max_fraction
        self.allow_deletes = allow_deletes
        #: Per lane, whether it held manifests under the prefix before the
        #: run: one that held none has nothing to tombstone.
        self.had_manifests = list(had_manifests)
        #: Told when a lane is found failing (the service takes it down).
        self.take_down: Callable[[Lane, BaseException], None] = lambda lane, exc: None
        #: Told once the listing and removals are all handed out.
        self.on_listed: Callable[[], None] = lambda: None
        self._routes: dict[ChangeEvent, frozenset[str]] = {}
        self._versions: dict[ChangeEvent, ObjectVersion] = {}
        self._tries: dict[str, int] = {}
        self._open = 0  # events handed out and not done
        self._again: asyncio.Queue[ChangeEvent | None] = asyncio.Queue()
        self._listing = ListedKeys(LISTED_IN_MEMORY)
        self._removal_pass = Removals(
            origin, prefix, self.summary, max_fraction=max_fraction, allow_deletes=allow_deletes
        )

    # ------------------------------------------------------------ Source

    async def start(self) -> None:
        return None

    def backlog(self) -> Backlog:
        return Backlog()

    async def close(self) -> None:
        self._listing.remove()

    def route(self, event: ChangeEvent) -> frozenset[str]:
        """The lanes ``event`` is pending at."""
        return self._routes.pop(event)

    async def events(self) -> AsyncIterator[ChangeEvent]:
        whole = True
        try:
            async for event in self._listed():
                yield event
        except (ReplicatorError, OSError) as exc:
            # Without a whole listing, "absent" proves nothing: no tombstones.
            self.summary.error(f"listing the source failed: {exc}")
            whole = False
        if whole and not self._live():
            self.summary.error("every destination is down: stopped reading the source")
            whole = False
        for where, reason in self.origin.unlisted:
            self.summary.error(
                f"source directory {where!r} cannot be read ({reason}): nothing under it "
                "was replicated, and nothing under it is taken as removed"
            )
        if whole:
            async for event in self._removals():
                yield event
        self.on_listed()
        while self._open:
            again = await self._again.get()
            if again is not None:
                yield again

    async def done(self, event: ChangeEvent, outcome: Outcome) -> None:
        try:
            if not event.removed:
                await self._object_done(event, outcome)
        except (ReplicatorError, OSError) as exc:  # its refresh or check failed
            self.summary.error(f"{event.key!r}: {type(exc).__name__}: {exc}")
            self.tally.done("error", event.size)
        finally:
            # Only now: a newer version yielded again is counted already.
            self._open -= 1
            self._again.put_nowait(None)  # wakes events() to see what is left

    # ------------------------------------------------------------ listing

    def _live(self) -> list[Lane]:
        return [lane for lane in self.lanes if lane.down is None]

    async def _listed(self) -> AsyncIterator[ChangeEvent]:
        # The listing runs ahead in its own task (``PREFETCH`` pages), so that
        # listing the next page (a directory walk in a thread, or an S3 page)
        # overlaps the held check of this one instead of following it.
        pages: asyncio.Queue[list[ObjectVersion] | Exception | None] = asyncio.Queue(PREFETCH)
        producer = asyncio.ensure_future(self._pages(pages))
        try:
            while (page := await pages.get()) is not None:
                if isinstance(page, Exception):
                    raise page
                if not self._live():
                    return  # every peer is down
                self._listing.update(obj.key for obj in page)
                self.summary.objects += len(page)
                self.tally.progress.listed(len(page), sum(obj.size for obj in page))
                for event in await self._page(page):
                    yield event
                while not self._again.empty():
                    if (again := self._again.get_nowait()) is not None:
                        yield again
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _pages(self, out: asyncio.Queue[list[ObjectVersion] | Exception | None]) -> None:
        """The origin's listing in pages of ``HELD_BATCH``, then None (or the
        exception that ended it)."""
        listing = self.origin.list(self.prefix)
        page: list[ObjectVersion] = []
        try:
            async for obj in listing:
                page.append(obj)
                if len(page) >= HELD_BATCH:
                    await out.put(page)
                    page = []
            await out.put(page)
            await out.put(None)
        except Exception as exc:  # the consumer raises it (a failed listing)
            await out.put(exc)
        finally:
            close = getattr(listing, "aclose", None)
            if close is not None:
                await close()

    async def _page(self, page: list[ObjectVersion]) -> list[ChangeEvent]:
        """The events of a page: one per object some live peer lacks."""
        out: list[ChangeEvent] = []
        if not page:
            return out
        for obj, lacks in zip(page, await self._lacking(page), strict=True):
            if lacks is not None and not lacks[0]:
                self.tally.unchanged(obj.size)
            elif lacks is not None:
                out.append(self._event(obj, *lacks))
            else:
                out += await self._alone(obj)
        return out

    async def _alone(self, obj: ObjectVersion) -> list[ChangeEvent]:
        """An object whose page check failed, checked alone; its error if any."""
        try:
            [lacks] = await self._lacking([obj], strict=True)
        except Exception as exc:
            self.summary.error(f"{obj.key!r}: {type(exc).__name__}: {exc}")
            self.tally.done("error", obj.size)
            return []
        if lacks is None or not lacks[0]:
            self.tally.unchanged(obj.size)
            return []
        return [self._event(obj, *lacks)]

    def _event(self, obj: ObjectVersion, lanes: set[str], observed: int) -> ChangeEvent:
        event = ChangeEvent(
            self.origin.source_id,
            self.origin.bucket,
            obj.key,
            Kind.CREATED,
            obj.event_time_ns,
            obj.size,
            obj.version_id,
            obj.etag,
            observed=observed,
            mtime_ns=obj.mtime_ns,
            inode=obj.inode,
            listed=True,
        )
        self._routes[event] = frozenset(lanes)
        self._versions[event] = obj
        self._open += 1
        return event

    async def _lacking(
        self, objs: Sequence[ObjectVersion], *, strict: bool = False
    ) -> list[Lacking]:
        """Per object, the live lanes lacking it and its observation number.

        A peer failing the check is taken down; any other failure makes
        every object's answer None (``strict``: raises it)."""
        live = self._live()
        for lane in self.lanes:
            if lane.down is not None:
                self.summary.bump(self.summary.not_sent, lane.name, len(objs))
        held = await asyncio.gather(
            *(held_many(lane.backend, self.origin, objs) for lane in live),
            return_exceptions=True,
        )
        out: list[tuple[set[str], int]] = [(set(), 0) for _ in objs]
        for lane, answers in zip(live, held, strict=True):
            if isinstance(answers, BaseException):
                if peer_failure(answers):
                    self.take_down(lane, answers)
                    self.summary.bump(self.summary.not_sent, lane.name, len(objs))
                    continue
                if strict or not isinstance(answers, Exception):
                    raise answers
                return [None] * len(objs)
            for i, one in enumerate(answers):
                if not one.held:
                    out[i][0].add(lane.name)
                    out[i] = (out[i][0], max(out[i][1], one.observed))
        return list(out)

    # ------------------------------------------------------------ outcomes

    async def _object_done(self, event: ChangeEvent, outcome: Outcome) -> None:
        obj = self._versions.pop(event)
        if outcome is not Outcome.SUPERSEDED:
            self.tally.done(self.tally.ended(event, outcome is Outcome.FAILED), obj.size)
            return
        self.tally.ended(event, False)  # forget it: its newer version follows
        tries = self._tries.get(obj.key, 0) + 1
        if tries >= SUPERSEDED_TRIES:
            self._tries.pop(obj.key, None)
            self.summary.error(
                f"{obj.key!r}: changed on each of {SUPERSEDED_TRIES} reads (written "
                "continuously?): not replicated this run"
            )
            self.tally.done("error", obj.size)
            return
        newer = await self.origin.refresh(obj)
        if newer is None:
            self._tries.pop(obj.key, None)
            self.tally.done("superseded", obj.size)  # gone: the next run records the removal
            return
        self._tries[obj.key] = tries
        for again in await self._page([newer]):
            self._again.put_nowait(again)

    # ------------------------------------------------------------ removals

    async def _removals(self) -> AsyncIterator[ChangeEvent]:
        """Tombstone events for keys a peer holds that the listing lacks, at
        each peer that held manifests before the run and whose plan the guard
        allows (``listing_removals.Removals``)."""
        lanes = [
            (i, lane)
            for i, lane in enumerate(self.lanes)
            if lane.down is None and self.had_manifests[i]
        ]
        async for i, lane, key, when_ns in self._removal_pass.allowed(lanes, self._listing):
            yield self._removal(i, lane, key, when_ns)

    def _removal(self, i: int, lane: Lane, key: str, when_ns: int) -> ChangeEvent:
        # One event per peer and key (the position tells them apart): each
        # peer's plan is its own.
        event = ChangeEvent(
            self.origin.source_id,
            self.origin.bucket,
            key,
            Kind.REMOVED,
            when_ns,
            position=Position(partition=i),
        )
        self._routes[event] = frozenset({lane.name})
        self._open += 1
        return event
